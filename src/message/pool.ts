// The "pool" engine: engine-js's frame loop on every core, one whole local file per worker thread.
//
// The main thread keeps everything that must be in one place: the keyring, KMS calls and the (caching)
// materials manager, whose limits are exact only because all lookups go through it (materials.ts). It
// resolves the materials for a file, then posts plain data (suite, data key, EDKs, signing or verification
// key, paths) to a worker, which reads the input, and creates, writes and commits (renames into place) the
// output temporary the caller reserved. Small files are posted in batches: a post and its answer cost the
// main thread ~0.2 ms, as much as the rest of its work for a 4 KiB file.
//
// Streams that are not local files (stdin, stdout, S3) take the in-thread js engine, which is also the
// fallback on a single core.
import { availableParallelism } from 'node:os'
import { closeSync, openSync, readSync } from 'node:fs'
import { createRequire } from 'node:module'
import type { Piscina } from 'piscina'
import { unwrapDataKey } from '@aws-crypto/material-management-node'
import {
  readHeader,
  type ByteSource,
  type DecryptMessageOptions,
  type EncryptMessageOptions,
  type Engine,
  type MessageResult,
} from './engine.js'
import { parseHeader } from './engine.js'
import { jsEngine } from './engine-js.js'
import { checkDecryptHeader, resolveDecryptionMaterials, resolveEncryptionMaterials } from './resolve.js'
import { EnvcryptError, IntegrityError, untilAborted } from '../errors.js'
import { provideSigningKeyPairs } from '../keys/signing-keys.js'
import type { DecryptFileTask, EncryptFileTask, FileBatch, FileTask, FileTaskResult } from './pool-worker.js'
import type { FileTarget, TemporaryTarget } from '../store/local.js'
import type { PlannedInput } from '../store/input-check.js'

interface FileRunOptions {
  signal?: AbortSignal
  /** The input's size, if known: small files are batched, and reads are sized to it. */
  inputSize?: number
  /** What the planner saw of the input: the worker refuses a file that changes while it is read (input-check.ts). */
  planned?: PlannedInput
}

/** An engine that can also run local file to local file off the main thread. `openOutput` reserves the
 *  output temporary, which the engine then creates, writes and commits; it is called only once the message
 *  is accepted (materials resolved), so a refused file leaves nothing behind. */
export interface FileEngine extends Engine {
  encryptFile(inputPath: string, openOutput: () => Promise<TemporaryTarget>, options: EncryptMessageOptions & FileRunOptions): Promise<MessageResult>
  /** `openOutput` may give verify's check target instead of a file (store/verify.ts). */
  decryptFile(inputPath: string, openOutput: () => Promise<FileTarget>, options: DecryptMessageOptions & FileRunOptions): Promise<MessageResult>
}

export function isFileEngine(engine: Engine): engine is FileEngine {
  return typeof (engine as Partial<FileEngine>).encryptFile === 'function'
}

/** A task before its output is reserved (runInWorker adds it). */
type Unreserved<T extends FileTask> = Omit<T, 'output'>

/** Header bytes read per step on the main thread (headers are usually well under 4 KiB). */
const HEADER_READ_BYTES = 64 * 1024

/** A post holds at most this many files or bytes (a file larger than that goes alone). */
const BATCH_MAX_FILES = 16
const BATCH_MAX_BYTES = 1024 * 1024
/** Posts in flight per worker thread: one running, one waiting, so no worker idles for a round trip. */
const POSTS_PER_THREAD = 2

let pool: Piscina<FileBatch, FileTaskResult[]> | undefined

/** Worker threads: one per core unless ENVCRYPT_POOL_THREADS says otherwise (a container whose CPU quota is
 *  below the cores it sees). More threads than cores did not help small files: their cost is CPU, not waiting. */
const poolThreads = () => {
  const requested = Number(process.env.ENVCRYPT_POOL_THREADS)
  return Number.isInteger(requested) && requested > 0 ? requested : availableParallelism()
}

function workerPool(): Piscina<FileBatch, FileTaskResult[]> {
  const threads = poolThreads()
  // piscina loads with the first pool (a run of a few small files never starts one).
  const { Piscina: PoolClass } = createRequire(import.meta.url)('piscina') as typeof import('piscina')
  // Created on first use: a run with only stdin or S3 never starts threads. Idle workers are unref'd by
  // piscina, so they do not keep the process alive.
  if (!pool) {
    // Its workers make the signing key pairs of signed messages ahead of time (keys/signing-keys.ts).
    provideSigningKeyPairs((curve, count) => (workerPool() as unknown as Piscina<{ curve: string; count: number }, Uint8Array>).run({ curve, count }, { name: 'makeSigningKeyPairs' }))
  }
  pool ??= new PoolClass<FileBatch, FileTaskResult[]>({
    filename: new URL('./pool-worker.js', import.meta.url).href,
    minThreads: threads,
    maxThreads: threads,
    // Each worker does blocking file I/O in its task: one task per thread at a time.
    concurrentTasksPerWorker: 1,
    // V8's default young generation (~32 MB per thread) only grows RSS here: a worker's objects are short-lived
    // and small (file bytes live outside the heap). 10,000 x 4 KiB: 348 MB peak RSS by default, 276 MB at 8 MB,
    // the same speed; 1 GiB / 200 files: unchanged.
    resourceLimits: { maxYoungGenerationSizeMb: 8 },
  })
  return pool
}

// One stop flag per run (per AbortSignal), shared with the workers: they check it between reads and around
// creating and renaming an output, so an interrupted run stops its files without terminating threads.
const NOT_INTERRUPTIBLE = new Int32Array(new SharedArrayBuffer(4))
const stopFlags = new WeakMap<AbortSignal, Int32Array>()
function stopFlagFor(signal: AbortSignal | undefined): Int32Array {
  if (!signal) return NOT_INTERRUPTIBLE
  let flag = stopFlags.get(signal)
  if (!flag) {
    const created = new Int32Array(new SharedArrayBuffer(4))
    if (signal.aborted) Atomics.store(created, 0, 1)
    else signal.addEventListener('abort', () => Atomics.store(created, 0, 1), { once: true })
    stopFlags.set(signal, created)
    flag = created
  }
  return flag
}

const INTERRUPTED: FileTaskResult = { ok: false, error: 'interrupted', integrity: false, interrupted: true }

interface Queued {
  task: FileTask
  size: number
  resolve(result: FileTaskResult): void
  reject(err: unknown): void
}

// Files waiting for a post, per stop flag (runs with different signals never share a post). Work is posted
// only while fewer than POSTS_PER_THREAD posts per thread are in flight; files that queue up meanwhile go
// together in the next posts. So a lone file is posted at once, and 10,000 small ones go ~8 per post.
const waiting = new Map<Int32Array, Queued[]>()
let postsInFlight = 0
let flushScheduled = false

function scheduleFlush(): void {
  if (flushScheduled) return
  flushScheduled = true
  // At the end of this event-loop turn: files whose materials resolved in the same turn can share a post.
  setImmediate(flush)
}

function flush(): void {
  flushScheduled = false
  const slots = poolThreads() * POSTS_PER_THREAD
  for (const [stop, queue] of waiting) {
    if (Atomics.load(stop, 0) !== 0) {
      // The run was interrupted: what has not been posted yet is not started at all.
      for (const queued of queue.splice(0)) queued.resolve(INTERRUPTED)
    }
    while (queue.length > 0 && postsInFlight < slots) {
      // Spread what is waiting over the free slots, so that every thread gets work.
      const share = Math.min(BATCH_MAX_FILES, Math.ceil(queue.length / (slots - postsInFlight)))
      let count = 0
      let bytes = 0
      while (count < share && count < queue.length && (count === 0 || bytes + queue[count]!.size <= BATCH_MAX_BYTES)) bytes += queue[count++]!.size
      post(stop, queue.splice(0, count))
    }
    if (queue.length === 0) waiting.delete(stop)
  }
}

function post(stop: Int32Array, batch: Queued[]): void {
  postsInFlight++
  workerPool()
    .run({ tasks: batch.map((queued) => queued.task), stop })
    .then(
      (results) => batch.forEach((queued, i) => queued.resolve(results[i]!)),
      (err) => batch.forEach((queued) => queued.reject(err)),
    )
    .finally(() => {
      postsInFlight--
      if (waiting.size > 0) scheduleFlush()
    })
}

/** Run one file task on a worker, in a post of its own or together with other waiting files. */
function runTask(task: FileTask, size: number | undefined, stop: Int32Array): Promise<FileTaskResult> {
  return new Promise((resolve, reject) => {
    let queue = waiting.get(stop)
    if (!queue) waiting.set(stop, (queue = []))
    // Unknown size: as if large, so it goes alone.
    queue.push({ task, size: size ?? BATCH_MAX_BYTES, resolve, reject })
    scheduleFlush()
  })
}

/** Reserve the output (only now: a refused file leaves nothing behind), then run the task on a worker. The
 *  task's copy of the data key is zeroed whatever happens (the worker zeroes its own). */
async function runInWorker(task: Unreserved<EncryptFileTask> | Unreserved<DecryptFileTask>, size: number | undefined, openOutput: () => Promise<FileTarget>, signal: AbortSignal | undefined): Promise<FileTaskResult & { ok: true }> {
  let result: FileTaskResult
  try {
    result = await runTask({ ...task, output: await openOutput() } as FileTask, size, stopFlagFor(signal))
  } finally {
    task.dataKey.fill(0)
  }
  if (!result.ok) throw result.integrity ? new IntegrityError(result.error) : new EnvcryptError(result.error)
  return result
}

/** Materials may wait on KMS retries: an interrupted run does not wait for them, and zeroes their data key
 *  if they still arrive. */
async function materialsUnlessAborted<M extends { zeroUnencryptedDataKey(): unknown }>(signal: AbortSignal | undefined, pending: Promise<M>): Promise<M> {
  try {
    return await untilAborted(signal, pending)
  } catch (err) {
    pending.then((material) => material.zeroUnencryptedDataKey(), () => undefined)
    throw err
  }
}

/** `bytes` in an ArrayBuffer of exactly its size. A post to a worker copies a typed array's whole buffer: an
 *  EDK decoded into Node's 8 KiB buffer pool, or a header read into a 64 KiB buffer, would cost that much
 *  per file. */
export function ownBytes(bytes: Uint8Array): Uint8Array {
  return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : new Uint8Array(bytes)
}

/** The data key as bytes of its own (the SDK may hold it as a KeyObject). */
function dataKeyBytes(material: { getUnencryptedDataKey(): unknown }): Uint8Array {
  return new Uint8Array(unwrapDataKey(material.getUnencryptedDataKey() as Uint8Array))
}

/** Read and parse a message header with synchronous reads on the main thread. A header is a read or two of a
 *  local file, and each async call (open, read, close) costs the main thread ~0.1 ms of bookkeeping, many
 *  times the system call itself: 10,000 small files spent 2.7 s there. The first read is sized to the file. */
async function readFileHeader(path: string, size: number | undefined, maxEncryptedDataKeys: number | false) {
  const fd = openSync(path, 'r')
  try {
    let want = Math.max(1, Math.min(HEADER_READ_BYTES, size ?? HEADER_READ_BYTES))
    const chunks = (async function* () {
      for (;;) {
        const buffer = Buffer.allocUnsafe(want)
        const bytesRead = readSync(fd, buffer, 0, want, null)
        if (bytesRead === 0) return
        want = HEADER_READ_BYTES
        yield buffer.subarray(0, bytesRead)
      }
    })()
    return await readHeader(chunks[Symbol.asyncIterator](), maxEncryptedDataKeys)
  } finally {
    closeSync(fd)
  }
}

export const poolEngine: FileEngine = {
  name: 'pool',

  encrypt: (input: ByteSource, output, options) => jsEngine.encrypt(input, output, options),
  decrypt: (input: ByteSource, output, options) => jsEngine.decrypt(input, output, options),

  async encryptFile(inputPath, openOutput, options) {
    const material = await materialsUnlessAborted(options.signal, resolveEncryptionMaterials(options))
    let task: Unreserved<EncryptFileTask>
    try {
      const signatureKey = material.suite.signatureCurve ? material.signatureKey : undefined
      task = {
        kind: 'encrypt',
        inputPath,
        planned: options.planned ?? {},
        suiteId: material.suite.id,
        encryptionContext: { ...material.encryptionContext },
        encryptedDataKeys: material.encryptedDataKeys.map(({ providerId, providerInfo, encryptedDataKey, rawInfo }) => ({
          providerId,
          providerInfo,
          encryptedDataKey: ownBytes(encryptedDataKey),
          ...(rawInfo ? { rawInfo: ownBytes(rawInfo) } : {}),
        })),
        dataKey: dataKeyBytes(material),
        signatureKey: signatureKey ? { privateKeyPem: signatureKey.privateKey as string, compressPoint: ownBytes(signatureKey.compressPoint) } : undefined,
        frameLength: options.frameLength,
        plaintextLength: options.plaintextLength,
      }
    } finally {
      material.zeroUnencryptedDataKey()
    }
    const result = await runInWorker(task, options.plaintextLength, openOutput, options.signal)
    const parsed = result.header ? { header: result.header } : result.headerBytes && parseHeader(result.headerBytes)
    if (!parsed) throw new EnvcryptError('internal: the worker returned no message header')
    return { header: parsed.header, bytesIn: result.bytesIn, bytesOut: result.bytesOut }
  },

  async decryptFile(inputPath, openOutput, options) {
    const maxEncryptedDataKeys = options.maxEncryptedDataKeys ?? false
    const { parsed, buffered } = await readFileHeader(inputPath, options.inputSize, maxEncryptedDataKeys)
    checkDecryptHeader(parsed, options)
    // Before the materials manager: a refused header never costs a KMS call.
    if (options.onHeader) await options.onHeader(parsed)
    const material = await materialsUnlessAborted(options.signal, resolveDecryptionMaterials(parsed, options))
    let task: Unreserved<DecryptFileTask>
    try {
      const verificationKey = material.suite.signatureCurve ? material.verificationKey : undefined
      task = {
        kind: 'decrypt',
        inputPath,
        planned: options.planned ?? {},
        inputSize: options.inputSize,
        suiteId: material.suite.id,
        encryptionContext: { ...material.encryptionContext },
        dataKey: dataKeyBytes(material),
        verificationKeyPem: verificationKey ? (verificationKey.publicKey as string) : undefined,
        expectedHeader: ownBytes(buffered.subarray(0, parsed.headerLength)),
        maxEncryptedDataKeys,
        maxBodySize: options.maxBodySize,
      }
    } finally {
      material.zeroUnencryptedDataKey()
    }
    const result = await runInWorker(task, options.inputSize, openOutput, options.signal)
    return { header: parsed.header, headerAuth: parsed.headerAuth, bytesIn: result.bytesIn, bytesOut: result.bytesOut }
  },
}
