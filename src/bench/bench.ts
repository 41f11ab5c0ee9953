// `envcrypt bench`: the aws-encryption-cli caching demo as one command. Makes (or reuses) a dataset, starts
// the local KMS in-process with an emulated round trip (or uses a real key given with -w), then runs the real
// CLI as a child process for encrypt and decrypt, without and with caching, verifies every round trip, and
// reports wall time, throughput, KMS calls, distinct data keys and peak RSS per run, next to the machine's
// own reference figures (AES-256-GCM, SHA-384, ECDSA P-384 on one core).
//
// Each run is its own process so that its peak RSS (read by a preload, bench-rss.ts) is its own.
import { spawn } from 'node:child_process'
import { createCipheriv, createHash, createSign, generateKeyPairSync, randomBytes } from 'node:crypto'
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { availableParallelism, cpus, tmpdir } from 'node:os'
import { Worker } from 'node:worker_threads'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Argv } from 'yargs'
import cliProgress from 'cli-progress'
import prettyBytes from 'pretty-bytes'
import { ALGORITHM_NAMES } from '../message/algorithms.js'
import { splitGroup } from '../cli/args.js'
import { UsageError } from '../errors.js'
import { localKmsEnv, startLocalKms, type LocalKms } from '../local-kms/server.js'
import { nativeActive } from '../message/native.js'
import { parseCachingSpec, type CachingSettings } from '../keys/materials.js'
import type { KmsCallCounts } from '../keys/keyrings.js'
import { defaultEngineName } from '../run/defaults.js'
import { renderBenchReport } from './report.js'

export const DEFAULT_CACHING: CachingSettings = { capacity: 1, max_age: 10, max_messages_encrypted: 100 }
const SIGNED = 'AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384'
const UNSIGNED = 'AES_256_GCM_HKDF_SHA512_COMMIT_KEY'
/** Random data is generated and written this much at a time. */
const WRITE_CHUNK = 64 * 1024 * 1024
const COMPARE_CHUNK = 4 * 1024 * 1024
/** Datasets of files up to this size get the signing-rate comparison. */
const SMALL_FILE_BYTES = 1024 * 1024

export interface BenchOptions {
  files: number
  fileSize: number
  /** Dataset directory: reused when it holds files, filled otherwise. Default: a fresh temporary one. */
  dir?: string
  latencyMs: number
  repeat: number
  caching: CachingSettings
  /** `-w` groups; none: a key on the in-process local KMS. */
  wrappingKeys: string[][]
  engines: string[]
  algorithm: string
  jobs?: number
  json: boolean
}

export interface BenchRun {
  mode: 'encrypt' | 'decrypt'
  caching: false | CachingSettings
  engine: string
  seconds: number
  mb_per_s: number
  files_per_s: number
  kms_calls: KmsCallCounts
  distinct_data_keys: number
  peak_rss_mb: number
}

export interface MachineReference {
  cores: number
  cpu: string
  aes_256_gcm_mb_per_s: number
  sha384_mb_per_s: number
  ecdsa_p384_signs_per_s: number
  /** Signatures per second with every core signing at once (one thread per core): the ceiling for many
   *  small signed files, each of which costs one signature. */
  ecdsa_p384_signs_per_s_all_cores: number
}

export interface BenchReport {
  files: number
  file_size: number
  bytes: number
  algorithm: string
  latency_ms: number | null
  /** Whether the js/pool engines ran their frames through the native kernel (false: JavaScript loop). */
  native: boolean
  runs: BenchRun[]
  reference: MachineReference
}

// ---------- the machine's reference (one core, Node's crypto) ----------

/** Repeat `step` for about `seconds`; returns steps per second. */
function rate(step: () => void, seconds = 0.5): number {
  step() // warm up
  let count = 0
  const started = performance.now()
  let elapsed = 0
  while (elapsed < seconds * 1000) {
    for (let i = 0; i < 8; i++) step()
    count += 8
    elapsed = performance.now() - started
  }
  return (count * 1000) / elapsed
}

function measureOneCore(): Omit<MachineReference, 'ecdsa_p384_signs_per_s_all_cores'> {
  const block = randomBytes(1024 * 1024)
  const key = randomBytes(32)
  const iv = randomBytes(12)
  // openssl speed style: one context, large blocks.
  const cipher = createCipheriv('aes-256-gcm', key, iv)
  const aes = rate(() => void cipher.update(block)) * block.length
  const hash = createHash('sha384')
  const sha = rate(() => void hash.update(block)) * block.length
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'secp384r1' })
  const digestInput = randomBytes(64)
  const signs = rate(() => void createSign('sha384').update(digestInput).sign(privateKey))
  return {
    cores: availableParallelism(),
    cpu: cpus()[0]?.model ?? 'unknown',
    aes_256_gcm_mb_per_s: Math.round(aes / 1e6),
    sha384_mb_per_s: Math.round(sha / 1e6),
    ecdsa_p384_signs_per_s: Math.round(signs),
  }
}

// The signing rate on every core at once: one worker thread per core, started together. (A file-system
// reference measured the same way, small-file create/write/rename round trips, was dropped: on this kind of
// machine it swung from 1,100/s to 28,000/s between runs with the state of the ext4 journal.)
const ALL_CORES_WORKER = `
const { parentPort, workerData } = require('node:worker_threads')
const crypto = require('node:crypto')
const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'secp384r1' })
const input = crypto.randomBytes(64)
const step = () => crypto.createSign('sha384').update(input).sign(privateKey)
step()
parentPort.postMessage('ready')
parentPort.once('message', () => {
  let count = 0
  const started = performance.now()
  while (performance.now() - started < workerData.seconds * 1000) { step(); count++ }
  parentPort.postMessage(count / ((performance.now() - started) / 1000))
})
`

async function allCoresSignRate(seconds = 1): Promise<number> {
  const workers = Array.from({ length: availableParallelism() }, () => new Worker(ALL_CORES_WORKER, { eval: true, workerData: { seconds } }))
  try {
    // Each sets up (key generation, one warm-up signature) and says 'ready'; then all start at once.
    const next = (worker: Worker) => new Promise<unknown>((resolve, reject) => (worker.once('message', resolve), worker.once('error', reject)))
    await Promise.all(workers.map(next))
    const rates = workers.map(next)
    for (const worker of workers) worker.postMessage('start')
    return (await Promise.all(rates)).reduce<number>((sum, value) => sum + Number(value), 0)
  } finally {
    await Promise.all(workers.map((worker) => worker.terminate()))
  }
}

export async function measureReference(): Promise<MachineReference> {
  return { ...measureOneCore(), ecdsa_p384_signs_per_s_all_cores: Math.round(await allCoresSignRate()) }
}

// ---------- dataset ----------

function listDataset(dir: string): string[] {
  return readdirSync(dir).filter((name) => statSync(join(dir, name)).isFile()).sort()
}

/** Fill `dir` with `files` random files of `size` bytes unless it already holds files (then reuse them). */
export function prepareDataset(dir: string, files: number, size: number): string[] {
  mkdirSync(dir, { recursive: true })
  const existing = listDataset(dir)
  if (existing.length > 0) return existing
  const width = String(files - 1).length
  for (let i = 0; i < files; i++) {
    const path = join(dir, `file-${String(i).padStart(width, '0')}.bin`)
    if (size <= WRITE_CHUNK) {
      writeFileSync(path, randomBytes(size))
    } else {
      writeFileSync(path, '')
      for (let written = 0; written < size; written += WRITE_CHUNK) writeFileSync(path, randomBytes(Math.min(WRITE_CHUNK, size - written)), { flag: 'a' })
    }
  }
  return listDataset(dir)
}

/** Compare two files piece by piece, so verifying a large file does not grow this process. */
function sameFile(a: string, b: string): boolean {
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

// ---------- one run: the real CLI in a child process ----------

const CLI = fileURLToPath(new URL('../cli.js', import.meta.url))
const RSS_PRELOAD = new URL('./rss.js', import.meta.url).href

interface ChildResult {
  seconds: number
  summary: { kms_calls: KmsCallCounts; files_ok: number; files_failed: number; failures: Array<{ input: string; error: string }> }
  peakRssMb: number
}

function runChild(args: string[], env: Record<string, string>, onFile: () => void, verbose: boolean): Promise<ChildResult> {
  const rssFile = join(mkdtempSync(join(tmpdir(), 'envcrypt-bench-rss-')), 'rss')
  return new Promise((resolve, reject) => {
    const started = performance.now()
    const child = spawn(process.execPath, ['--import', RSS_PRELOAD, CLI, ...args, ...(verbose ? ['-v'] : ['-q']), '--summary', '-'], {
      env: { ...process.env, ...env, ENVCRYPT_BENCH_RSS_FILE: rssFile },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const stdout: Buffer[] = []
    let stderr = ''
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk))
    child.stderr.on('data', (chunk: Buffer) => {
      const text = chunk.toString()
      for (const line of text.split('\n')) if (line.startsWith('envcrypt: ok:')) onFile()
      stderr += text
      if (stderr.length > 1_000_000) stderr = stderr.slice(-100_000)
    })
    child.on('error', reject)
    child.on('close', (code) => {
      const seconds = (performance.now() - started) / 1000
      try {
        const summary = JSON.parse(Buffer.concat(stdout).toString())
        const peakRssMb = Math.round(Number(readFileSync(rssFile, 'utf8')) / 1024)
        rmSync(rssFile, { force: true })
        if (code !== 0) throw new Error(`exit code ${code}: ${summary.failures?.[0]?.error ?? stderr.trim().split('\n').pop()}`)
        resolve({ seconds, summary, peakRssMb })
      } catch (err) {
        reject(new Error(`bench run "envcrypt ${args.join(' ')}" failed: ${(err as Error).message}; ${stderr.trim().split('\n').slice(-3).join(' ')}`))
      }
    })
  })
}

function distinctDataKeys(metadataPath: string): number {
  const keys = new Set<string>()
  for (const line of readFileSync(metadataPath, 'utf8').split('\n')) {
    if (!line.trim()) continue
    for (const edk of JSON.parse(line).header.encrypted_data_keys) keys.add(edk.encrypted_data_key)
  }
  return keys.size
}

const round = (value: number, digits: number) => Math.round(value * 10 ** digits) / 10 ** digits

// ---------- the whole bench ----------

export async function runBench(options: BenchOptions, log: (line: string) => void = (line) => process.stderr.write(line + '\n')): Promise<BenchReport> {
  if (!Number.isInteger(options.files) || options.files < 1) throw new UsageError('--files must be a positive integer')
  if (!Number.isInteger(options.fileSize) || options.fileSize < 0) throw new UsageError('--file-size must be a non-negative integer')
  if (!Number.isInteger(options.repeat) || options.repeat < 1) throw new UsageError('--repeat must be a positive integer')
  // Progress (and these notes) on a terminal only; silent otherwise.
  const interactive = !options.json && Boolean(process.stderr.isTTY)
  const work = mkdtempSync(join(tmpdir(), 'envcrypt-bench-'))
  const dataDir = options.dir ?? join(work, 'data')
  let kms: LocalKms | undefined
  try {
    if (interactive) log(`envcrypt bench: preparing ${options.dir && existsSync(options.dir) ? 'the dataset in ' + options.dir : `${options.files} files of ${prettyBytes(options.fileSize)}`}`)
    const names = prepareDataset(dataDir, options.files, options.fileSize)
    const bytes = names.reduce((sum, name) => sum + statSync(join(dataDir, name)).size, 0)
    // The reference figures were taken with a warm page cache: read the dataset once so the first run
    // measures envcrypt, not the disk.
    warmPageCache(dataDir, names)

    let env: Record<string, string> = {}
    let keySpec = options.wrappingKeys.flatMap((group) => ['-w', ...group])
    if (keySpec.length === 0) {
      kms = await startLocalKms({ latencyMs: options.latencyMs })
      const keyArn = await kms.createKey('envcrypt bench')
      keySpec = ['-w', `key=${keyArn}`]
      env = localKmsEnv(kms)
    }

    if (interactive) log('envcrypt bench: measuring the machine reference (one core, then all cores)')
    const reference = await measureReference()

    const runs: BenchRun[] = []
    const plan: Array<{ engine: string; caching: false | CachingSettings }> = []
    for (const engine of options.engines) for (const caching of [false, options.caching] as const) plan.push({ engine, caching })
    for (let repetition = 0; repetition < options.repeat; repetition++) {
      for (const { engine, caching } of plan) {
        const label = `${engine}${caching ? ' caching' : ''}`
        const encDir = join(work, 'enc')
        const decDir = join(work, 'dec')
        const metadata = join(work, 'meta.jsonl')
        rmSync(encDir, { recursive: true, force: true })
        rmSync(decDir, { recursive: true, force: true })
        const common = [...keySpec, '--engine', engine, ...(caching ? ['--caching', ...cachingTokens(caching)] : []), ...(options.jobs ? ['-j', String(options.jobs)] : [])]
        for (const mode of ['encrypt', 'decrypt'] as const) {
          const bar = interactive ? new cliProgress.SingleBar({ format: `${mode.padEnd(7)} ${label.padEnd(14)} {bar} {value}/{total} files`, clearOnComplete: true }, cliProgress.Presets.shades_classic) : undefined
          bar?.start(names.length, 0)
          const args = mode === 'encrypt'
            ? ['-e', '-r', '-i', dataDir, '-o', encDir, '--suffix', '', '--algorithm', options.algorithm, ...common, '--metadata-output', metadata, '--overwrite-metadata']
            : ['-d', '-r', '-i', encDir, '-o', decDir, '--suffix', '', ...common, '--metadata-output', metadata, '--overwrite-metadata']
          let result: ChildResult
          try {
            result = await runChild(args, env, () => bar?.increment(), interactive)
          } finally {
            bar?.stop()
          }
          if (result.summary.files_ok !== names.length) throw new Error(`${mode} ${label}: ${result.summary.files_ok} of ${names.length} files done`)
          runs.push({
            mode,
            caching,
            engine,
            seconds: round(result.seconds, 3),
            mb_per_s: round(bytes / 1e6 / result.seconds, 2),
            files_per_s: round(names.length / result.seconds, 1),
            kms_calls: result.summary.kms_calls,
            distinct_data_keys: distinctDataKeys(metadata),
            peak_rss_mb: result.peakRssMb,
          })
          if (interactive) log(formatRun(runs[runs.length - 1]))
        }
        for (const name of names) {
          if (!sameFile(join(dataDir, name), join(decDir, name))) throw new Error(`round trip mismatch: ${name} (${label})`)
        }
      }
    }
    // A reused --dir reports its own files, not the generation options.
    return { files: names.length, file_size: Math.round(bytes / names.length), bytes, algorithm: options.algorithm, latency_ms: kms ? options.latencyMs : null, native: nativeActive(), runs, reference }
  } finally {
    await kms?.close()
    rmSync(work, { recursive: true, force: true })
  }
}

function cachingTokens(caching: CachingSettings): string[] {
  return Object.entries(caching).map(([name, value]) => `${name}=${value}`)
}

function formatCalls(calls: KmsCallCounts): string {
  const entries = Object.entries(calls)
  return entries.length ? entries.map(([op, n]) => `${op}=${n}`).join(' ') : '-'
}

function formatRun(run: BenchRun): string {
  return `  ${run.mode.padEnd(7)} ${(run.engine + (run.caching ? ' caching' : '')).padEnd(14)} ${run.seconds.toFixed(2).padStart(8)} s ${run.mb_per_s.toFixed(1).padStart(8)} MB/s ${run.files_per_s.toFixed(1).padStart(9)} files/s  ${formatCalls(run.kms_calls).padEnd(22)} ${String(run.distinct_data_keys).padStart(6)} keys ${String(run.peak_rss_mb).padStart(6)} MB RSS`
}

function warmPageCache(dir: string, names: readonly string[]): void {
  const buffer = Buffer.allocUnsafe(4 * 1024 * 1024)
  for (const name of names) {
    const fd = openSync(join(dir, name), 'r')
    try {
      while (readSync(fd, buffer, 0, buffer.length, null) > 0);
    } finally {
      closeSync(fd)
    }
  }
}

export function formatReport(report: BenchReport): string {
  const lines = [
    `envcrypt bench: ${report.files} files x ${report.file_size} B (${prettyBytes(report.bytes)}), ${report.algorithm}, KMS ${report.latency_ms === null ? 'as configured' : `local, ${report.latency_ms} ms latency`}`,
    `  ${'mode'.padEnd(7)} ${'run'.padEnd(14)} ${'wall'.padStart(10)} ${'throughput'.padStart(13)} ${'files/s'.padStart(17)}  ${'KMS calls'.padEnd(22)} ${'data keys'.padStart(11)} ${'peak RSS'.padStart(13)}`,
    ...report.runs.map(formatRun),
    `frame loop: ${report.native ? 'native kernel' : 'JavaScript (native kernel not built, or ENVCRYPT_NATIVE=0)'}`,
    `machine reference (one core of ${report.reference.cores}, Node crypto): AES-256-GCM ${report.reference.aes_256_gcm_mb_per_s} MB/s, SHA-384 ${report.reference.sha384_mb_per_s} MB/s, ECDSA P-384 ${report.reference.ecdsa_p384_signs_per_s} signs/s`,
    `machine reference (all ${report.reference.cores} cores at once): ECDSA P-384 ${report.reference.ecdsa_p384_signs_per_s_all_cores} signs/s`,
    ...signedShareLines(report),
  ]
  return lines.join('\n')
}

/** For signed suites and small files: each encrypt run's files/s as a share of the all-core signing rate,
 *  the most small signed files per second the machine could write. */
function signedShareLines(report: BenchReport): string[] {
  // Only where a file's signature is a noticeable part of its cost: small files.
  if (!/ECDSA/.test(report.algorithm) || report.file_size > SMALL_FILE_BYTES) return []
  const signs = report.reference.ecdsa_p384_signs_per_s_all_cores
  return [
    `signed encrypt runs against the all-core signing rate (${signs} signs/s):`,
    ...report.runs
      .filter((run) => run.mode === 'encrypt')
      .map((run) => `  ${(run.engine + (run.caching ? ' caching' : '')).padEnd(14)} ${run.files_per_s.toFixed(1).padStart(9)} files/s = ${Math.round((run.files_per_s / signs) * 100)}% of it`),
  ]
}

// ---------- the command ----------

export function benchCommand(y: Argv) {
  return y
    .option('files', { type: 'number', default: 200, describe: 'number of files in the generated dataset' })
    .option('file-size', { type: 'number', default: 5_120_000, describe: 'size of each generated file in bytes' })
    .option('dir', { type: 'string', describe: 'dataset directory: reused if it holds files, filled otherwise' })
    .option('latency-ms', { type: 'number', default: 10, describe: 'emulated KMS round trip of the in-process local KMS' })
    .option('repeat', { type: 'number', default: 1, describe: 'repeat every run this many times' })
    .option('json', { type: 'boolean', describe: 'print one JSON object instead of the table' })
    .option('caching', { type: 'string', array: true, describe: 'caching settings for the caching runs (default capacity=1 max_age=10 max_messages_encrypted=100)' })
    .option('wrapping-keys', { alias: 'w', type: 'string', array: true, describe: 'use this key (e.g. key=ARN) instead of the local KMS' })
    .option('engine', { type: 'string', array: true, choices: ['pool', 'js', 'sdk'], describe: 'engine(s) to run (default: the CLI default)' })
    .option('signed', { type: 'boolean', describe: `the signed suite ${SIGNED} (default)` })
    .option('unsigned', { type: 'boolean', describe: `the unsigned suite ${UNSIGNED}` })
    .option('algorithm', { type: 'string', describe: `any suite: ${ALGORITHM_NAMES.join(', ')}` })
    .option('jobs', { alias: 'j', type: 'number', describe: 'files in flight per run (default: the CLI default)' })
    .option('report', { type: 'string', describe: 'also write a self-contained HTML page with charts of the runs to FILE.html' })
    .example('$0 bench --report bench.html', 'the default benchmark, plus charts in bench.html')
    .example('$0 bench', '1 GiB as 200 files, encrypt and decrypt without and with caching')
    .example('$0 bench --files 10000 --file-size 4096 --json', 'many small files, as JSON')
}

export interface BenchArgs {
  files: number
  fileSize: number
  dir?: string
  latencyMs: number
  repeat: number
  json?: boolean
  caching?: string[]
  wrappingKeys?: string[]
  engine?: string[]
  signed?: boolean
  unsigned?: boolean
  algorithm?: string
  jobs?: number
  report?: string
}

export async function benchMain(args: BenchArgs): Promise<void> {
  if ([args.signed, args.unsigned, args.algorithm !== undefined].filter(Boolean).length > 1) throw new UsageError('choose one of --signed, --unsigned, --algorithm')
  const report = await runBench({
    files: args.files,
    fileSize: args.fileSize,
    dir: args.dir,
    latencyMs: args.latencyMs,
    repeat: args.repeat,
    caching: args.caching?.length ? parseCachingSpec(args.caching.flatMap(splitGroup)) : DEFAULT_CACHING,
    wrappingKeys: (args.wrappingKeys ?? []).map(splitGroup),
    engines: args.engine?.length ? args.engine : [defaultEngineName()],
    algorithm: args.algorithm ?? (args.unsigned ? UNSIGNED : SIGNED),
    jobs: args.jobs,
    json: Boolean(args.json),
  })
  process.stdout.write(args.json ? JSON.stringify(report) + '\n' : formatReport(report) + '\n')
  if (args.report !== undefined) {
    writeFileSync(args.report, renderBenchReport(report))
    if (!args.json) process.stderr.write(`envcrypt bench: charts written to ${args.report}\n`)
  }
}
