// The "pool" engine: engine-js's frame loop on every core, one whole local file per worker thread.
//
// The main thread keeps everything that must be in one place: the keyring, KMS calls and the (caching)
// materials manager, whose limits are exact only because all lookups go through it (materials.ts). It
// resolves the materials for a file, then posts plain data (suite, data key, EDKs, signing or verification
// key, paths) to a worker, which reads the input and writes the output temporary itself. Committing (rename
// into place) stays with the caller, after the worker reported success.
//
// Streams that are not local files (stdin, stdout, S3) take the in-thread js engine, which is also the
// fallback on a single core.
import { availableParallelism } from 'node:os'
import { open } from 'node:fs/promises'
import { Piscina } from 'piscina'
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
import { checkDecryptHeader, jsEngine, resolveDecryptionMaterials, resolveEncryptionMaterials } from './engine-js.js'
import { EnvcryptError, IntegrityError } from './errors.js'
import type { DecryptFileTask, EncryptFileTask, FileTask, FileTaskResult } from './engine-pool-worker.js'

export interface FileRunOptions {
  fsync: boolean
  signal?: AbortSignal
}

/** An engine that can also run local file to local file off the main thread. `openOutput` creates the
 *  output temporary and returns its path; it is called only once the message is accepted (materials
 *  resolved), so a refused file leaves nothing behind. */
export interface FileEngine extends Engine {
  encryptFile(inputPath: string, openOutput: () => Promise<string>, options: EncryptMessageOptions & FileRunOptions): Promise<MessageResult>
  decryptFile(inputPath: string, openOutput: () => Promise<string>, options: DecryptMessageOptions & FileRunOptions): Promise<MessageResult>
}

export function isFileEngine(engine: Engine): engine is FileEngine {
  return typeof (engine as Partial<FileEngine>).encryptFile === 'function'
}

/** Header bytes read per step on the main thread (headers are usually well under 4 KiB). */
const HEADER_READ_BYTES = 64 * 1024

let pool: Piscina<FileTask, FileTaskResult> | undefined

function workerPool(): Piscina<FileTask, FileTaskResult> {
  const threads = availableParallelism()
  // Created on first use: a run with only stdin or S3 never starts threads. Idle workers are unref'd by
  // piscina, so they do not keep the process alive.
  pool ??= new Piscina<FileTask, FileTaskResult>({
    filename: new URL('./engine-pool-worker.js', import.meta.url).href,
    minThreads: threads,
    maxThreads: threads,
    // Each worker does blocking file I/O in its task: one task per thread at a time.
    concurrentTasksPerWorker: 1,
  })
  return pool
}

/** Stop the worker threads (tests and the bench call it; the CLI simply exits). */
export async function closeWorkerPool(): Promise<void> {
  const current = pool
  pool = undefined
  await current?.destroy()
}

/** Open the output (only now: a refused file leaves nothing behind), then run the task on a worker. The task's
 *  copy of the data key is zeroed whatever happens. */
async function runInWorker(task: FileTask, openOutput: () => Promise<string>, signal: AbortSignal | undefined): Promise<FileTaskResult & { ok: true }> {
  let result: FileTaskResult
  try {
    task.outputPath = await openOutput()
    result = await workerPool().run(task, { signal })
  } finally {
    task.dataKey.fill(0)
  }
  if (!result.ok) throw result.integrity ? new IntegrityError(result.error) : new EnvcryptError(result.error)
  return result
}

/** The data key as bytes of its own (the SDK may hold it as a KeyObject). */
function dataKeyBytes(material: { getUnencryptedDataKey(): unknown }): Uint8Array {
  return new Uint8Array(unwrapDataKey(material.getUnencryptedDataKey() as Uint8Array))
}

async function readFileHeader(path: string, maxEncryptedDataKeys: number | false) {
  const handle = await open(path, 'r')
  try {
    const chunks = (async function* () {
      for (;;) {
        const { bytesRead, buffer } = await handle.read(Buffer.alloc(HEADER_READ_BYTES), 0, HEADER_READ_BYTES, null)
        if (bytesRead === 0) return
        yield buffer.subarray(0, bytesRead)
      }
    })()
    return await readHeader(chunks[Symbol.asyncIterator](), maxEncryptedDataKeys)
  } finally {
    await handle.close()
  }
}

export const poolEngine: FileEngine = {
  name: 'pool',

  encrypt: (input: ByteSource, output, options) => jsEngine.encrypt(input, output, options),
  decrypt: (input: ByteSource, output, options) => jsEngine.decrypt(input, output, options),

  async encryptFile(inputPath, openOutput, options) {
    const material = await resolveEncryptionMaterials(options)
    let task: EncryptFileTask
    try {
      const signatureKey = material.suite.signatureCurve ? material.signatureKey : undefined
      task = {
        kind: 'encrypt',
        inputPath,
        outputPath: '',
        fsync: options.fsync,
        suiteId: material.suite.id,
        encryptionContext: { ...material.encryptionContext },
        encryptedDataKeys: material.encryptedDataKeys.map(({ providerId, providerInfo, encryptedDataKey, rawInfo }) => ({
          providerId,
          providerInfo,
          encryptedDataKey,
          ...(rawInfo ? { rawInfo } : {}),
        })),
        dataKey: dataKeyBytes(material),
        signatureKey: signatureKey ? { privateKeyPem: signatureKey.privateKey as string, compressPoint: signatureKey.compressPoint } : undefined,
        frameLength: options.frameLength,
        plaintextLength: options.plaintextLength,
      }
    } finally {
      material.zeroUnencryptedDataKey()
    }
    const result = await runInWorker(task, openOutput, options.signal)
    const parsed = result.headerBytes && parseHeader(result.headerBytes)
    if (!parsed) throw new EnvcryptError('internal: the worker returned no message header')
    return { header: parsed.header, bytesIn: result.bytesIn, bytesOut: result.bytesOut }
  },

  async decryptFile(inputPath, openOutput, options) {
    const maxEncryptedDataKeys = options.maxEncryptedDataKeys ?? false
    const { parsed, buffered } = await readFileHeader(inputPath, maxEncryptedDataKeys)
    checkDecryptHeader(parsed, options)
    // Before the materials manager: a refused header never costs a KMS call.
    if (options.onHeader) await options.onHeader(parsed)
    const material = await resolveDecryptionMaterials(parsed, options)
    let task: DecryptFileTask
    try {
      const verificationKey = material.suite.signatureCurve ? material.verificationKey : undefined
      task = {
        kind: 'decrypt',
        inputPath,
        outputPath: '',
        fsync: options.fsync,
        suiteId: material.suite.id,
        encryptionContext: { ...material.encryptionContext },
        dataKey: dataKeyBytes(material),
        verificationKeyPem: verificationKey ? (verificationKey.publicKey as string) : undefined,
        expectedHeader: buffered.subarray(0, parsed.headerLength),
        maxEncryptedDataKeys,
        maxBodySize: options.maxBodySize,
      }
    } finally {
      material.zeroUnencryptedDataKey()
    }
    const result = await runInWorker(task, openOutput, options.signal)
    return { header: parsed.header, headerAuth: parsed.headerAuth, bytesIn: result.bytesIn, bytesOut: result.bytesOut }
  },
}
