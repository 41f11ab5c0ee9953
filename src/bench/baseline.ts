// Another tool on the same dataset, in the same run (`bench --baseline-encrypt/--baseline-decrypt CMD`): its
// command template runs once over the whole dataset, and what it wrote is checked before its time counts.
import { spawn } from 'node:child_process'
import { closeSync, openSync, readdirSync, readSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'
import { split as shlexSplit } from 'shlex'
import { UsageError } from '../errors.js'

const COMPARE_CHUNK = 4 * 1024 * 1024

export interface BaselineResult {
  mode: 'encrypt' | 'decrypt'
  command: string
  /** Best of --repeat, wall clock. */
  seconds: number
  verified: boolean
  /** Why verification failed (first problem found). */
  verify_error?: string
}

/** The template's words (split as a POSIX shell would, no shell run), `{input}` and `{output}` replaced in each. */
export function baselineArgv(template: string, input: string, output: string): string[] {
  let words: string[]
  try {
    words = shlexSplit(template)
  } catch (err) {
    throw new UsageError(`--baseline: cannot split "${template}" into words (${(err as Error).message})`)
  }
  if (words.length === 0) throw new UsageError('--baseline-encrypt/--baseline-decrypt: the command is empty')
  if (!words.some((word) => word.includes('{input}')) || !words.some((word) => word.includes('{output}'))) {
    throw new UsageError(`--baseline: "${template}" must contain {input} and {output}`)
  }
  return words.map((word) => word.replaceAll('{input}', input).replaceAll('{output}', output))
}

/** Runs the command; resolves with its wall time in seconds, rejects if it fails to start or exits non-zero. */
export function runBaselineOnce(argv: readonly string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now()
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (chunk: Buffer) => {
      stderr = (stderr + chunk.toString()).slice(-4000)
    })
    child.on('error', (err) => reject(new Error(`baseline "${argv[0]}" did not start: ${err.message}`)))
    child.on('close', (code, signal) => {
      const seconds = (performance.now() - started) / 1000
      if (code === 0) resolve(seconds)
      else reject(new Error(`baseline "${argv.join(' ')}" exited with ${code ?? signal}: ${stderr.trim().split('\n').slice(-2).join(' ')}`))
    })
  })
}

/** Every regular file under `root`, as paths relative to it. */
function listTree(root: string, dir = root): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) return listTree(root, path)
    return entry.isFile() ? [relative(root, path)] : []
  })
}

/** The output a tool wrote for dataset file `name`: the same name, or the name plus suffixes (`.encrypted`). */
function outputFor(outputs: readonly string[], name: string): string[] {
  return outputs.filter((path) => path === name || path.startsWith(name + '.'))
}

/** Checks that `outDir` holds, for every dataset file, one file with exactly its bytes (and nothing else).
 *  Returns undefined when it does, else the first problem. */
export function compareWithDataset(dataDir: string, names: readonly string[], outDir: string): string | undefined {
  const outputs = listTree(outDir)
  if (outputs.length !== names.length) return `${outputs.length} files written for ${names.length} in the dataset`
  for (const name of names) {
    const found = outputFor(outputs, name)
    if (found.length !== 1) return `${found.length === 0 ? 'no' : 'several'} outputs for ${name}`
    if (!sameFile(join(dataDir, name), join(outDir, found[0]!))) return `${found[0]} differs from ${name}`
  }
  return undefined
}

/** Compare two files piece by piece, so verifying a large file does not grow this process. */
export function sameFile(a: string, b: string): boolean {
  if (statSync(a).size !== statSync(b).size) return false
  const [fa, fb] = [openSync(a, 'r'), openSync(b, 'r')]
  try {
    const [ba, bb] = [Buffer.allocUnsafe(COMPARE_CHUNK), Buffer.allocUnsafe(COMPARE_CHUNK)]
    for (;;) {
      const read = readSync(fa, ba, 0, COMPARE_CHUNK, null)
      if (readSync(fb, bb, 0, COMPARE_CHUNK, null) !== read) return false
      if (read === 0) return true
      if (!ba.subarray(0, read).equals(bb.subarray(0, read))) return false
    }
  } finally {
    closeSync(fa)
    closeSync(fb)
  }
}
