// `verify`: prove that every message of a tree (local or S3) is intact and decryptable with the keys at hand,
// writing no plaintext anywhere. Each message goes through decrypt's own path (runTree, the engines, the
// worker pool) into a target that keeps nothing (store/verify.ts). With `against`, each message must also
// decrypt to exactly the bytes of its plaintext file, and plaintext files with no message are reported, as
// rclone's cryptcheck does.
import { stat } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { UsageError } from './errors.js'
import type { InputItem, OutputTarget } from './store/local.js'
import { planFiles } from './store/plan.js'
import { shardOf } from './store/shard.js'
import { checkOutput } from './store/verify.js'
import { verifyMessages, type DecryptTreeOptions, type TreeSummary } from './tree.js'

/** The decrypt options that apply when nothing is written. */
export interface VerifyTreeOptions
  extends Omit<DecryptTreeOptions, 'output' | 'outputFor' | 'decode' | 'buffer' | 'skipExisting' | 'sync' | 'noOverwrite' | 'confirmOverwrite' | 'fsync' | 'dryRun' | 'messageStage'> {
  /** A directory or s3:// prefix of plaintext files: message REL must decrypt to exactly the bytes of
   *  AGAINST/REL with `suffix` removed; plaintext files with no message fail too. */
  against?: string
  /** With `against`: the suffix encrypt appended to message names (default `.encrypted`; '' for none). */
  suffix?: string
}

const DEFAULT_MESSAGE_SUFFIX = '.encrypted'

/** Verify a tree: one summary as decrypt's (a verified message counts in files_ok, anything else in
 *  files_failed), one metadata record per message with `"output": null` and `"verified"`. */
export async function verifyTree(options: VerifyTreeOptions): Promise<TreeSummary> {
  const { against, suffix = DEFAULT_MESSAGE_SUFFIX } = options
  if (against === undefined) return verifyMessages({ ...options, output: '', outputFor: () => checkOutput({}) })
  const plaintexts = await listPlaintexts(against, options)
  const matched = new Set<string>()
  const outputFor = (input: InputItem): OutputTarget => {
    const rel = input.relPath.endsWith(suffix) ? input.relPath.slice(0, input.relPath.length - suffix.length) : ''
    if (rel === '' || rel.endsWith('/')) return checkOutput({ problem: `its name does not end in "${suffix}", so it names no plaintext file (see --suffix)` })
    matched.add(rel)
    const plaintext = plaintexts.get(rel)
    return checkOutput(plaintext ? { against: plaintext } : { problem: `there is no plaintext file ${plaintextName(against, rel)}` })
  }
  const summary = await verifyMessages({ ...options, output: '', outputFor })
  if (!summary.interrupted) reportUnmatched(summary, plaintexts, matched, options)
  return summary
}

/** Every plaintext file under `against`, by relative path. */
async function listPlaintexts(against: string, options: VerifyTreeOptions): Promise<Map<string, InputItem>> {
  const store = options.stores?.find((s) => s.matches(against))
  let root = against
  if (store) {
    if (!root.endsWith('/')) root += '/'
  } else if (!(await stat(against).catch(() => undefined))?.isDirectory()) {
    throw new UsageError(`--against ${against}: not a directory`)
  }
  const planned = await planFiles(
    { inputs: [root], output: '', recursive: true, suffix: '', followSymlinks: options.followSymlinks, warn: options.warn ?? (() => undefined), outputFor: () => checkOutput({}) },
    options.stores,
  )
  return new Map(planned.map(({ input }) => [input.relPath, input]))
}

function plaintextName(against: string, rel: string): string {
  return against.startsWith('s3://') ? (against.endsWith('/') ? against : against + '/') + rel : join(resolve(against), ...rel.split('/'))
}

/** Plaintext files no message maps to fail, each in the shard its message would be in (so N workers report
 *  each once). */
function reportUnmatched(summary: TreeSummary, plaintexts: Map<string, InputItem>, matched: Set<string>, options: VerifyTreeOptions): void {
  const suffix = options.suffix ?? DEFAULT_MESSAGE_SUFFIX
  for (const [rel, plaintext] of plaintexts) {
    if (matched.has(rel)) continue
    if (options.shard && shardOf(rel + suffix, options.shard.count) !== options.shard.index) continue
    const error = `plaintext file with no message (no ${rel + suffix} among the messages)`
    summary.files_failed++
    summary.failures.push({ input: plaintext.display, error })
    options.onFile?.({ input: plaintext.display, output: '', status: 'failed', error, bytesIn: 0, bytesOut: 0 })
  }
}
