// `envcrypt bench`: the aws-encryption-cli caching demo as one command. Makes (or reuses) a dataset, starts
// the local KMS in-process with an emulated round trip (or uses a real key given with -w), then runs the real
// CLI as a child process for encrypt, decrypt and verify, without and with caching, checks every round trip, and
// reports wall time, throughput, KMS calls, distinct data keys and peak RSS per run, and each run's share of the
// machine's own limit measured in the same run (machine.ts). With --baseline-encrypt/--baseline-decrypt it also
// runs another tool (the official aws-encryption-cli) on the same dataset and prints envcrypt's ratio to it.
//
// Each run is its own process so that its peak RSS (read by a preload, bench-rss.ts) is its own.
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Argv } from 'yargs'
import cliProgress from 'cli-progress'
import prettyBytes from 'pretty-bytes'
import { ALGORITHM_NAMES } from '../message/algorithms.js'
import { splitGroup } from '../cli/args.js'
import { EnvcryptError, UsageError } from '../errors.js'
import { localKmsEnv, startLocalKms, type LocalKms } from '../local-kms/server.js'
import { nativeActive } from '../message/native.js'
import { parseCachingSpec, type CachingSettings } from '../keys/materials.js'
import type { KmsCallCounts } from '../keys/keyrings.js'
import { defaultEngineName } from '../run/defaults.js'
import { renderBenchReport } from './report.js'
import { measureMachine, runLimitSeconds, type MachineReference } from './machine.js'
import { baselineArgv, compareWithDataset, runBaselineOnce, sameFile, type BaselineResult } from './baseline.js'


const DEFAULT_CACHING: CachingSettings = { capacity: 1, max_age: 10, max_messages_encrypted: 100 }
const SIGNED = 'AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384'
const UNSIGNED = 'AES_256_GCM_HKDF_SHA512_COMMIT_KEY'
/** Random data is generated and written this much at a time. */
const WRITE_CHUNK = 64 * 1024 * 1024

/** The dataset shapes of the speed targets: 1 GiB as 200 files, 2,000 small files, one small file. */
const SHAPES = {
  big: { files: 200, fileSize: 5_120_000 },
  small: { files: 2000, fileSize: 4096 },
  'one-file': { files: 1, fileSize: 1 },
} as const

interface BenchOptions {
  files: number
  fileSize: number
  /** Dataset directory: reused when it holds files, filled otherwise. Default: a fresh temporary one. */
  dir?: string
  latencyMs: number
  repeat: number
  caching: CachingSettings
  /** Also run every engine with caching (default true). */
  cachingRuns?: boolean
  /** `-w` groups; none: a key on the in-process local KMS. */
  wrappingKeys: string[][]
  engines: string[]
  /** False: the engines are the CLI's default, so no --engine is passed (a small dataset then runs in-thread, as
   *  the CLI would run it). */
  enginesNamed?: boolean
  algorithm: string
  jobs?: number
  json: boolean
  /** Command templates of another tool, run on the same dataset: `{input}`, `{output}`. */
  baselineEncrypt?: string
  baselineDecrypt?: string
}

interface BenchRun {
  /** verify: decrypt's authentication with nothing written (envcrypt verify). */
  mode: 'encrypt' | 'decrypt' | 'verify'
  caching: false | CachingSettings
  engine: string
  seconds: number
  mb_per_s: number
  files_per_s: number
  kms_calls: KmsCallCounts
  distinct_data_keys: number
  peak_rss_mb: number
  /** The machine's limit for this run's work (machine.ts), and the run's share of it (limit / seconds). */
  limit_seconds: number
  share_of_limit: number
  /** The baseline's best time over this run's: present only when that baseline's output was verified. */
  baseline_ratio?: number
}

interface BenchReport {
  files: number
  file_size: number
  bytes: number
  algorithm: string
  latency_ms: number | null
  /** Whether the js/pool engines ran their frames through the native kernel (false: JavaScript loop). */
  native: boolean
  runs: BenchRun[]
  reference: MachineReference
  baselines: BaselineResult[]
}

// ---------- dataset ----------

interface Dataset {
  dir: string
  names: string[]
  bytes: number
}

function listDataset(dir: string): string[] {
  return readdirSync(dir).filter((name) => statSync(join(dir, name)).isFile()).sort()
}

/** Fill `dir` with `files` random files of `size` bytes unless it already holds files (then reuse them). */
function prepareDataset(dir: string, files: number, size: number): string[] {
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

interface BenchKeys {
  keySpec: string[]
  env: Record<string, string>
  kms?: LocalKms
}

/** The -w keys given, or a key on an in-process local KMS. */
async function benchKeys(options: BenchOptions): Promise<BenchKeys> {
  const keySpec = options.wrappingKeys.flatMap((group) => ['-w', ...group])
  if (keySpec.length > 0) return { keySpec, env: {} }
  const kms = await startLocalKms({ latencyMs: options.latencyMs })
  const keyArn = await kms.createKey('envcrypt bench')
  return { keySpec: ['-w', `key=${keyArn}`], env: localKmsEnv(kms), kms }
}

function checkBenchOptions(options: BenchOptions): void {
  if (!Number.isInteger(options.files) || options.files < 1) throw new UsageError('--files must be a positive integer')
  if (!Number.isInteger(options.fileSize) || options.fileSize < 0) throw new UsageError('--file-size must be a non-negative integer')
  if (!Number.isInteger(options.repeat) || options.repeat < 1) throw new UsageError('--repeat must be a positive integer')
  // Refuse a bad template before any work.
  for (const template of [options.baselineEncrypt, options.baselineDecrypt]) if (template !== undefined) baselineArgv(template, 'in', 'out')
}

async function runBench(options: BenchOptions, log: (line: string) => void = (line) => process.stderr.write(line + '\n')): Promise<BenchReport> {
  checkBenchOptions(options)
  // Progress (and these notes) on a terminal only; silent otherwise.
  const interactive = !options.json && Boolean(process.stderr.isTTY)
  const work = mkdtempSync(join(tmpdir(), 'envcrypt-bench-'))
  const dataDir = options.dir ?? join(work, 'data')
  let keys: BenchKeys | undefined
  try {
    if (interactive) log(`envcrypt bench: preparing ${options.dir && existsSync(options.dir) ? 'the dataset in ' + options.dir : `${options.files} files of ${prettyBytes(options.fileSize)}`}`)
    const names = prepareDataset(dataDir, options.files, options.fileSize)
    const dataset: Dataset = { dir: dataDir, names, bytes: names.reduce((sum, name) => sum + statSync(join(dataDir, name)).size, 0) }
    // The limit is taken with a warm page cache: read the dataset once so the first run measures envcrypt, not the disk.
    warmPageCache(dataDir, names)
    keys = await benchKeys(options)
    if (interactive) log('envcrypt bench: measuring the machine limit (I/O floor, one core, then all cores)')
    const reference = await measureMachine(dataDir, names, work)
    const runs: BenchRun[] = []
    const timings = new Map<'encrypt' | 'decrypt', BaselineTimes>()
    for (let repetition = 0; repetition < options.repeat; repetition++) {
      const encDir = await runEnvcryptPlan({ options, dataset, keys, reference, work, interactive, log }, runs)
      // Alternately with envcrypt: the other tool's speed drifts during a long run.
      await timeBaselines(options, dataset, encDir, work, timings)
    }
    const baselines = await verifyBaselines(options, dataset, keys, work, timings)
    addBaselineRatios(runs, baselines)
    // A reused --dir reports its own files, not the generation options.
    return {
      files: names.length, file_size: Math.round(dataset.bytes / names.length), bytes: dataset.bytes, algorithm: options.algorithm,
      latency_ms: keys.kms ? options.latencyMs : null, native: nativeActive(), runs, reference, baselines,
    }
  } finally {
    await keys?.kms?.close()
    rmSync(work, { recursive: true, force: true })
  }
}

interface PlanContext {
  options: BenchOptions
  dataset: Dataset
  keys: BenchKeys
  reference: MachineReference
  work: string
  interactive: boolean
  log: (line: string) => void
}

/** Every engine, without and with caching, encrypt then decrypt, each round trip verified. Returns the
 *  directory of the messages the last encrypt wrote (a decrypt baseline's input). */
async function runEnvcryptPlan(context: PlanContext, runs: BenchRun[]): Promise<string> {
  const { options, dataset, keys, work } = context
  const encDir = join(work, 'enc')
  const decDir = join(work, 'dec')
  const cachings = options.cachingRuns === false ? [false as const] : [false as const, options.caching]
  for (const engine of options.engines) {
    for (const caching of cachings) {
      const label = `${engine}${caching ? ' caching' : ''}`
      rmSync(encDir, { recursive: true, force: true })
      rmSync(decDir, { recursive: true, force: true })
      const common = [...keys.keySpec, ...(options.enginesNamed === false ? [] : ['--engine', engine]), ...(caching ? ['--caching', ...cachingTokens(caching)] : []), ...(options.jobs ? ['-j', String(options.jobs)] : [])]
      for (const mode of ['encrypt', 'decrypt', 'verify'] as const) {
        const args = mode === 'encrypt'
          ? ['-e', '-r', '-i', dataset.dir, '-o', encDir, '--suffix', '', '--algorithm', options.algorithm, ...common]
          : mode === 'decrypt'
          ? ['-d', '-r', '-i', encDir, '-o', decDir, '--suffix', '', ...common]
          : ['verify', '-r', '-i', encDir, ...common]
        runs.push(await timedRun(context, { mode, engine, caching, label }, args))
        if (context.interactive) context.log(formatRun(runs[runs.length - 1]!))
      }
      for (const name of dataset.names) {
        if (!sameFile(join(dataset.dir, name), join(decDir, name))) throw new Error(`round trip mismatch: ${name} (${label})`)
      }
    }
  }
  return encDir
}

async function timedRun(context: PlanContext, run: Pick<BenchRun, 'mode' | 'engine' | 'caching'> & { label: string }, args: string[]): Promise<BenchRun> {
  const { dataset, reference, work } = context
  const metadata = join(work, 'meta.jsonl')
  const files = dataset.names.length
  const bar = context.interactive
    ? new cliProgress.SingleBar({ format: `${run.mode.padEnd(7)} ${run.label.padEnd(14)} {bar} {value}/{total} files`, clearOnComplete: true }, cliProgress.Presets.shades_classic)
    : undefined
  bar?.start(files, 0)
  let result: ChildResult
  try {
    result = await runChild([...args, '--metadata-output', metadata, '--overwrite-metadata'], context.keys.env, () => bar?.increment(), context.interactive)
  } finally {
    bar?.stop()
  }
  if (result.summary.files_ok !== files) throw new Error(`${run.mode} ${run.label}: ${result.summary.files_ok} of ${files} files done`)
  const dataKeys = distinctDataKeys(metadata)
  // verify does decrypt's cryptographic work (it only writes nothing).
  const limit = runLimitSeconds(reference, { mode: run.mode === 'verify' ? 'decrypt' : run.mode, bytes: dataset.bytes, files, signed: /ECDSA/.test(context.options.algorithm), keyPairs: run.caching ? dataKeys : files })
  return {
    mode: run.mode,
    caching: run.caching,
    engine: run.engine,
    seconds: round(result.seconds, 3),
    mb_per_s: round(dataset.bytes / 1e6 / result.seconds, 2),
    files_per_s: round(files / result.seconds, 1),
    kms_calls: result.summary.kms_calls,
    distinct_data_keys: dataKeys,
    peak_rss_mb: result.peakRssMb,
    limit_seconds: round(limit, 4),
    share_of_limit: round(limit / result.seconds, 4),
  }
}

// ---------- the baselines ----------

interface BaselineTimes {
  template: string
  seconds: number[]
  output: string
  error?: string
}

/** Runs each baseline once into an empty directory; a failing command is recorded, not thrown. */
async function timeBaselines(options: BenchOptions, dataset: Dataset, encDir: string, work: string, timings: Map<'encrypt' | 'decrypt', BaselineTimes>): Promise<void> {
  const templates = [['encrypt', options.baselineEncrypt, dataset.dir], ['decrypt', options.baselineDecrypt, encDir]] as const
  for (const [mode, template, input] of templates) {
    if (template === undefined) continue
    const output = join(work, `baseline-${mode}`)
    const times = timings.get(mode) ?? { template, seconds: [], output }
    timings.set(mode, times)
    if (times.error) continue
    rmSync(output, { recursive: true, force: true })
    mkdirSync(output)
    try {
      times.seconds.push(await runBaselineOnce(baselineArgv(template, input, output)))
    } catch (err) {
      times.error = (err as Error).message
    }
  }
}

/** What the baselines wrote last: decrypted bytes must equal the dataset; encrypted messages must decrypt with
 *  envcrypt (same keys) to the dataset. */
async function verifyBaselines(options: BenchOptions, dataset: Dataset, keys: BenchKeys, work: string, timings: Map<'encrypt' | 'decrypt', BaselineTimes>): Promise<BaselineResult[]> {
  const results: BaselineResult[] = []
  for (const [mode, times] of timings) {
    let problem = times.error
    if (!problem && mode === 'decrypt') problem = compareWithDataset(dataset.dir, dataset.names, times.output)
    if (!problem && mode === 'encrypt') {
      const check = join(work, 'baseline-check')
      rmSync(check, { recursive: true, force: true })
      try {
        await runChild(['-d', '-r', '-i', times.output, '-o', check, '--suffix', '', ...keys.keySpec, '-S'], keys.env, () => undefined, false)
        problem = compareWithDataset(dataset.dir, dataset.names, check)
      } catch (err) {
        problem = `envcrypt cannot decrypt what it wrote: ${(err as Error).message}`
      }
    }
    const seconds = times.seconds.length ? Math.min(...times.seconds) : 0
    results.push({ mode, command: times.template, seconds: round(seconds, 3), verified: !problem, ...(problem ? { verify_error: problem } : {}) })
  }
  return results
}

function addBaselineRatios(runs: BenchRun[], baselines: readonly BaselineResult[]): void {
  for (const baseline of baselines) {
    if (!baseline.verified) continue
    for (const run of runs) if (run.mode === baseline.mode) run.baseline_ratio = round(baseline.seconds / run.seconds, 2)
  }
}

// ---------- the report ----------

function cachingTokens(caching: CachingSettings): string[] {
  return Object.entries(caching).map(([name, value]) => `${name}=${value}`)
}

function formatCalls(calls: KmsCallCounts): string {
  const entries = Object.entries(calls)
  return entries.length ? entries.map(([op, n]) => `${op}=${n}`).join(' ') : '-'
}

function formatRun(run: BenchRun): string {
  const ratio = run.baseline_ratio === undefined ? '' : `${run.baseline_ratio.toFixed(2).padStart(7)}x`
  return `  ${run.mode.padEnd(7)} ${(run.engine + (run.caching ? ' caching' : '')).padEnd(14)} ${run.seconds.toFixed(2).padStart(8)} s ${run.mb_per_s.toFixed(1).padStart(8)} MB/s ${run.files_per_s.toFixed(1).padStart(9)} files/s  ${formatCalls(run.kms_calls).padEnd(22)} ${String(run.distinct_data_keys).padStart(6)} keys ${String(run.peak_rss_mb).padStart(6)} MB RSS ${run.limit_seconds.toFixed(3).padStart(8)} s ${(Math.round(run.share_of_limit * 100) + '%').padStart(5)}${ratio}`
}

function formatReport(report: BenchReport): string {
  const ref = report.reference
  const baselineHeader = report.runs.some((run) => run.baseline_ratio !== undefined) ? ` ${'vs baseline'.padStart(11)}` : ''
  return [
    `envcrypt bench: ${report.files} files x ${report.file_size} B (${prettyBytes(report.bytes)}), ${report.algorithm}, KMS ${report.latency_ms === null ? 'as configured' : `local, ${report.latency_ms} ms latency`}`,
    `  ${'mode'.padEnd(7)} ${'run'.padEnd(14)} ${'wall'.padStart(10)} ${'throughput'.padStart(13)} ${'files/s'.padStart(17)}  ${'KMS calls'.padEnd(22)} ${'data keys'.padStart(11)} ${'peak RSS'.padStart(13)} ${'limit'.padStart(10)} ${'share'.padStart(5)}${baselineHeader}`,
    ...report.runs.map(formatRun),
    `frame loop: ${report.native ? 'native kernel' : 'JavaScript (native kernel not built, or ENVCRYPT_NATIVE=0)'}`,
    `machine limit, measured in this run (${ref.cores} cores, ${ref.cpu}):`,
    `  I/O floor ${ref.io_floor_seconds.toFixed(3)} s (one-process copy of the dataset, one reused 1 MiB buffer)`,
    `  one core: AES-256-GCM ${ref.aes_256_gcm_mb_per_s} MB/s, SHA-384 ${ref.sha384_mb_per_s} MB/s, ECDSA P-384 ${ref.ecdsa_p384_signs_per_s} signs/s`,
    `  all ${ref.cores} cores at once: ECDSA P-384 ${ref.ecdsa_p384_key_pairs_per_s_all_cores} key pairs/s, ${ref.ecdsa_p384_signs_per_s_all_cores} signs/s, ${ref.ecdsa_p384_verifies_per_s_all_cores} verifies/s`,
    `  a run's limit: I/O floor + bytes through AES-GCM (and SHA-384 if signed) over ${ref.cores} cores + its ECDSA operations at the all-core rates; share = limit / wall`,
    ...report.baselines.map(formatBaseline),
  ].join('\n')
}

function formatBaseline(baseline: BaselineResult): string {
  const outcome = baseline.verified ? 'output verified' : `verification FAILED: ${baseline.verify_error}`
  return `baseline ${baseline.mode}: ${baseline.seconds.toFixed(2)} s (best), ${outcome}: ${baseline.command}`
}

// ---------- the command ----------

export function benchCommand(y: Argv) {
  return y
    .option('shape', { type: 'string', choices: Object.keys(SHAPES), describe: 'dataset shape: big (200 x 5,120,000 B, the default), small (2,000 x 4 KiB), one-file (1 x 1 B)' })
    .option('files', { type: 'number', describe: 'number of files in the generated dataset (default 200)' })
    .option('file-size', { type: 'number', describe: 'size of each generated file in bytes (default 5120000)' })
    .option('dir', { type: 'string', describe: 'dataset directory: reused if it holds files, filled otherwise' })
    .option('latency-ms', { type: 'number', default: 10, describe: 'emulated KMS round trip of the in-process local KMS' })
    .option('repeat', { type: 'number', default: 1, describe: 'repeat every run (and each baseline) this many times; baselines count their best' })
    .option('json', { type: 'boolean', describe: 'print one JSON object instead of the table' })
    .option('caching', { type: 'string', array: true, describe: 'caching settings for the caching runs (default capacity=1 max_age=10 max_messages_encrypted=100)' })
    .option('caching-runs', { type: 'boolean', default: true, describe: 'also run each engine with caching (--no-caching-runs: without only)' })
    .option('wrapping-keys', { alias: 'w', type: 'string', array: true, describe: 'use this key instead of the local KMS: key=ARN, or provider=raw-aes key=NAME material=file://PATH (as a baseline tool would)' })
    .option('baseline-encrypt', { type: 'string', describe: 'another tool\'s encrypt command, run on the same dataset: {input} is the dataset directory, {output} an empty one' })
    .option('baseline-decrypt', { type: 'string', describe: 'another tool\'s decrypt command: {input} is the directory of messages envcrypt wrote, {output} an empty one' })
    .option('engine', { type: 'string', array: true, choices: ['pool', 'js', 'sdk'], describe: 'engine(s) to run (default: the CLI default)' })
    .option('signed', { type: 'boolean', describe: `the signed suite ${SIGNED} (default)` })
    .option('unsigned', { type: 'boolean', describe: `the unsigned suite ${UNSIGNED}` })
    .option('algorithm', { type: 'string', describe: `any suite: ${ALGORITHM_NAMES.join(', ')}` })
    .option('jobs', { alias: 'j', type: 'number', describe: 'files in flight per run (default: the CLI default)' })
    .option('report', { type: 'string', describe: 'also write a self-contained HTML page with charts of the runs to FILE.html' })
    .example('$0 bench --report bench.html', 'the default benchmark, plus charts in bench.html')
    .example('$0 bench', '1 GiB as 200 files, encrypt and decrypt without and with caching')
    .example('$0 bench --shape small --json', '2,000 small files, as JSON')
    .example('$0 bench -w provider=raw-aes key=k1 material=file://key.bin --no-caching-runs --repeat 3 --baseline-encrypt \'aws-encryption-cli -e -r -i {input} -o {output} -w provider=raw-aes key=k1 -S\'', 'envcrypt against another tool on the same data and key')
}

export interface BenchArgs {
  shape?: keyof typeof SHAPES
  files?: number
  fileSize?: number
  dir?: string
  latencyMs: number
  repeat: number
  json?: boolean
  caching?: string[]
  cachingRuns: boolean
  wrappingKeys?: string[]
  baselineEncrypt?: string
  baselineDecrypt?: string
  engine?: string[]
  signed?: boolean
  unsigned?: boolean
  algorithm?: string
  jobs?: number
  report?: string
}

export async function benchMain(args: BenchArgs): Promise<void> {
  if ([args.signed, args.unsigned, args.algorithm !== undefined].filter(Boolean).length > 1) throw new UsageError('choose one of --signed, --unsigned, --algorithm')
  const shape = SHAPES[args.shape ?? 'big']
  const report = await runBench({
    files: args.files ?? shape.files,
    fileSize: args.fileSize ?? shape.fileSize,
    dir: args.dir,
    latencyMs: args.latencyMs,
    repeat: args.repeat,
    caching: args.caching?.length ? parseCachingSpec(args.caching.flatMap(splitGroup)) : DEFAULT_CACHING,
    cachingRuns: args.cachingRuns,
    wrappingKeys: (args.wrappingKeys ?? []).map(splitGroup),
    engines: args.engine?.length ? args.engine : [defaultEngineName()],
    enginesNamed: Boolean(args.engine?.length),
    algorithm: args.algorithm ?? (args.unsigned ? UNSIGNED : SIGNED),
    jobs: args.jobs,
    json: Boolean(args.json),
    baselineEncrypt: args.baselineEncrypt,
    baselineDecrypt: args.baselineDecrypt,
  })
  process.stdout.write(args.json ? JSON.stringify(report) + '\n' : formatReport(report) + '\n')
  if (args.report !== undefined) {
    writeFileSync(args.report, renderBenchReport(report))
    if (!args.json) process.stderr.write(`envcrypt bench: charts written to ${args.report}\n`)
  }
  const failed = report.baselines.filter((baseline) => !baseline.verified)
  if (failed.length) throw new EnvcryptError(`baseline ${failed.map((b) => `${b.mode} failed verification (${b.verify_error})`).join('; ')}`)
}
