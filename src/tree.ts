// The library entry: encryptTree/decryptTree. Plans the files, builds the keyring and materials manager
// once, runs the engine on every file with bounded concurrency (run/file.ts), and reports one summary. The
// CLI is a thin layer over these two functions.
import { setMaxListeners } from 'node:events'
import pLimit from 'p-limit'
import { open } from 'node:fs/promises'
import { parseAlgorithm, parseCommitmentPolicy, startsLikeMessage } from './message/algorithms.js'
import { jsEngine } from './message/engine-js.js'
import { sdkEngine, type ByteSource, type Engine } from './message/engine.js'
import { isFileEngine, poolEngine } from './message/pool.js'
import { describeError, UsageError } from './errors.js'
import type { OutputWriter } from './store/local.js'
import { buildKeyring, parseWrappingKeySpec, type KmsCallCounts, type KmsRunOptions } from './keys/keyrings.js'
import { buildMaterialsManager } from './keys/materials.js'
import { openMetadataSink, type Mode } from './message/metadata.js'
import { planFiles, type PlannedFile } from './store/plan.js'
import { dryRunActions } from './store/dry-run.js'
import { processFile, type RunStop, type TreeRun } from './run/file.js'
import { jobsWithinLimits } from './run/limits.js'
import { defaultEngineName, defaultJobs, defaultPoolJobs } from './run/defaults.js'
import type { CommonTreeOptions, DecryptTreeOptions, EncryptTreeOptions, TreeSummary } from './run/options.js'

export type * from './run/options.js'
export { checkRequiredContext } from './run/file.js'

export const DEFAULT_FRAME_LENGTH = 4096

const ENGINES: Record<string, Engine> = { js: jsEngine, sdk: sdkEngine, pool: poolEngine }

/** Register another engine implementation (the fast engine registers itself). */
export function registerEngine(engine: Engine): void {
  ENGINES[engine.name] = engine
}

export function encryptTree(options: EncryptTreeOptions): Promise<TreeSummary> {
  return runTree('encrypt', options)
}

export function decryptTree(options: DecryptTreeOptions): Promise<TreeSummary> {
  return runTree(options.unsignedOnly ? 'decrypt-unsigned' : 'decrypt', options)
}

/** Decrypt every message into the target `outputFor` gives it, which keeps nothing (verify.ts): the same
 *  path, engines and worker pool as decrypt, with metadata records marked `verified`. */
export function verifyMessages(options: DecryptTreeOptions & Required<Pick<DecryptTreeOptions, 'outputFor'>>): Promise<TreeSummary> {
  return runTree('verify', options)
}

async function runTree(mode: Mode, options: EncryptTreeOptions & DecryptTreeOptions): Promise<TreeSummary> {
  const started = performance.now()
  const warn = options.warn ?? ((message: string) => process.stderr.write(`envcrypt: warning: ${message}\n`))
  const named = checkRunOptions(options)
  const planned = await planRun(mode, options, warn)
  const engine = engineForRun(named, options, planned)
  if (options.dryRun) return dryRunSummary(planned, options, started, mode)
  const kmsCalls: KmsCallCounts = {}
  const specs = options.wrappingKeys.map((spec) => (Array.isArray(spec) ? parseWrappingKeySpec(spec) : spec))
  const stop: RunStop = {}
  const kms: KmsRunOptions = { kmsTimeoutSeconds: options.kmsTimeoutSeconds, onRunWideError: (err) => void (stop.error ??= err) }
  const keyringSetup = buildKeyring(specs, mode === 'encrypt' ? 'encrypt' : 'decrypt', { kmsCalls, warn, kmsClientConfig: options.kmsClientConfig, ...kms })
  const stage = options.messageStage?.({ engine, kmsCalls, warn, kms })
  const run: TreeRun = {
    mode,
    options,
    engine,
    cmm: buildMaterialsManager(keyringSetup.keyring, options.caching),
    commitmentPolicy: parseCommitmentPolicy(options.commitmentPolicy ?? 'require-encrypt-require-decrypt'),
    suiteId: options.algorithm ? parseAlgorithm(options.algorithm) : undefined,
    frameLength: options.frameLength ?? DEFAULT_FRAME_LENGTH,
    stage,
    streamsOnly: Boolean(!isFileEngine(engine) || options.encode || options.decode || stage || options.transformSource),
    summary: { files_ok: 0, files_failed: 0, files_skipped: 0, bytes_in: 0, bytes_out: 0, seconds: 0, failures: [], kms_calls: kmsCalls },
    metadata: openMetadataSink(options.metadataOutput, options.overwriteMetadata ?? false),
    inFlight: new Set(),
    openSources: new Set(),
    warn,
    stop,
    keySpecs: specs,
  }
  options.onPlan?.(planned.length, planned.reduce((sum, file) => sum + (file.input.size ?? 0), 0))
  const allByFile = !run.streamsOnly && planned.every((file) => file.input.localPath !== undefined && file.output.openTemporary)
  const jobs = jobsWithinLimits(options.jobs, allByFile ? defaultPoolJobs() : defaultJobs(), warn)
  const stopListening = listenForAbort(run, jobs)
  const messageCheck = mode === 'encrypt' && !options.transformSource && !options.messageStage ? warnAboutMessageInputs(planned, warn) : undefined
  try {
    const limit = pLimit(jobs)
    await Promise.all(planned.map((file) => limit(() => processFile(run, file))))
    await messageCheck
  } finally {
    stopListening()
    keyringSetup.dispose()
    stage?.dispose()
    await run.metadata.close().catch((err) => {
      // Every output is in place: say so, and which file could not be written, rather than a bare errno.
      run.summary.metadata_error = `cannot write the metadata to ${options.metadataOutput} (${describeError(err)}); ${run.summary.files_ok} output(s) were written`
    })
  }
  run.summary.seconds = Math.round((performance.now() - started) / 10) / 100
  if (options.signal?.aborted) run.summary.interrupted = String(options.signal.reason ?? 'aborted')
  if (stop.error) {
    run.summary.stopped = stop.error.message
    run.summary.files_not_attempted ??= 0
  }
  return run.summary
}

/** Encrypting a message again is almost always a slip (-e for -d, or a re-run over its own output): say so
 *  once, with how many local inputs already start like a message. Runs beside the encryption (8 bytes per
 *  file through the thread pool) rather than before it, so it does not delay the first file. */
async function warnAboutMessageInputs(planned: readonly PlannedFile[], warn: (message: string) => void): Promise<void> {
  const messages: string[] = []
  const limit = pLimit(8)
  await Promise.all(planned.map((file) => limit(async () => {
    const path = file.input.localPath
    if (path === undefined || !file.input.size) return
    const handle = await open(path, 'r').catch(() => undefined)
    if (!handle) return // unreadable here: the file's own step reports it
    try {
      const { buffer, bytesRead } = await handle.read(Buffer.alloc(8), 0, 8, 0)
      if (startsLikeMessage(buffer.subarray(0, bytesRead))) messages.push(file.input.display)
    } catch {
      // as above
    } finally {
      await handle.close()
    }
  })))
  if (messages.length) {
    warn(`${messages.length} of ${planned.length} input(s) already look like Encryption SDK messages (${messages.sort()[0]}${messages.length > 1 ? ', ...' : ''}); encrypting them again (use -d to decrypt)`)
  }
}

/** Refuses bad numeric options before anything is planned; returns the engine to use. */
function checkRunOptions(options: EncryptTreeOptions & DecryptTreeOptions): Engine {
  const frameLength = options.frameLength ?? DEFAULT_FRAME_LENGTH
  if (!Number.isInteger(frameLength) || frameLength < 1 || frameLength > 2 ** 31 - 1) {
    throw new UsageError('--frame-length must be an integer between 1 and 2147483647')
  }
  const engine = ENGINES[options.engine ?? defaultEngineName()]
  if (!engine) throw new UsageError(`--engine: unknown engine "${options.engine}" (${Object.keys(ENGINES).join(', ')})`)
  if (options.jobs !== undefined && !(Number.isInteger(options.jobs) && options.jobs >= 1)) throw new UsageError('-j/--jobs must be a positive integer')
  if (options.maxEncryptedDataKeys !== undefined && !(Number.isInteger(options.maxEncryptedDataKeys) && options.maxEncryptedDataKeys >= 1)) {
    throw new UsageError('--max-encrypted-data-keys must be a positive integer')
  }
  return engine
}

/** Starting the worker threads costs more (each loads the SDK: ~0.1 s wall on an idle 2-core machine, ~0.3
 *  CPU-s) than a few small files take on this thread; such a run takes the in-thread js engine (the same frame
 *  loop) unless an engine was named. */
const SMALL_RUN = { files: 8, bytes: 4 * 1024 * 1024 }

function engineForRun(chosen: Engine, options: CommonTreeOptions, planned: readonly PlannedFile[]): Engine {
  if (options.engine !== undefined || process.env.ENVCRYPT_ENGINE !== undefined || chosen !== poolEngine) return chosen
  if (planned.length > SMALL_RUN.files) return chosen
  const bytes = planned.reduce((sum, file) => sum + (file.input.size ?? Infinity), 0)
  return bytes <= SMALL_RUN.bytes ? jsEngine : chosen
}

async function planRun(mode: Mode, options: EncryptTreeOptions & DecryptTreeOptions, warn: (message: string) => void): Promise<PlannedFile[]> {
  const allPlanned = await planFiles(
    {
      inputs: options.inputs,
      output: options.output,
      recursive: options.recursive ?? false,
      suffix: options.suffix ?? (mode === 'encrypt' ? '.encrypted' : '.decrypted'),
      bufferStdout: options.buffer,
      followSymlinks: options.followSymlinks,
      shard: options.shard,
      manifest: options.manifest,
      metadataOutput: options.metadataOutput,
      outputFor: options.outputFor,
      warn,
    },
    options.stores,
  )
  return options.selectInput ? allPlanned.filter((file) => options.selectInput!(file.input)) : allPlanned
}

async function dryRunSummary(planned: readonly PlannedFile[], options: CommonTreeOptions, started: number, mode: Mode): Promise<TreeSummary> {
  const actions = await dryRunActions(mode, planned, options)
  const skipped = actions.filter((a) => a.action === 'skip').length
  const seconds = Math.round((performance.now() - started) / 10) / 100
  return { files_ok: 0, files_failed: 0, files_skipped: skipped, bytes_in: 0, bytes_out: 0, seconds, failures: [], kms_calls: {}, planned: actions }
}

/** On abort: abort every output in flight and close every input being read. Returns the unsubscribe. */
function listenForAbort(run: TreeRun, jobs: number): () => void {
  const { signal } = run.options
  if (!signal) return () => undefined
  const onAbort = () => {
    for (const writer of run.inFlight) void (writer as Pick<OutputWriter, 'abort'>).abort()
    // An input that blocks (stdin, a slow pipe) must not hold the run: closing it ends the engine's read.
    for (const source of run.openSources) (source as ByteSource & { destroy?: () => void }).destroy?.()
  }
  // Up to two abort listeners per file in flight (untilAborted, the worker pool) plus this one: more than EventTarget's default 10.
  setMaxListeners(2 * jobs + 8, signal)
  signal.addEventListener('abort', onAbort, { once: true })
  return () => signal.removeEventListener('abort', onAbort)
}
