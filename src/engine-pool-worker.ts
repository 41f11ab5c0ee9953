// The pool engine's worker: runs engine-js's frame loop on one whole local file, given the materials the
// main thread resolved (KMS and the caching materials manager never leave the main thread, so caching limits
// stay exact). Only plain data crosses threads: the SDK's material objects are rebuilt here with the minimum
// the loop needs (suite, data key, EDKs, signing or verification key). The worker reads the input and writes
// the output temporary itself, so no file bytes are posted between threads.
import { closeSync, fsyncSync, openSync, readSync, writeSync } from 'node:fs'
import { Writable } from 'node:stream'
import {
  EncryptedDataKey,
  KeyringTraceFlag,
  NodeAlgorithmSuite,
  NodeDecryptionMaterial,
  NodeEncryptionMaterial,
  type AlgorithmSuiteIdentifier,
} from '@aws-crypto/material-management-node'
import { SignatureKey, VerificationKey } from '@aws-crypto/material-management'
import { readHeader, type ByteSource } from './engine.js'
import { decryptWithMaterials, encryptWithMaterials } from './engine-js.js'
import { describeError, EnvcryptError, IntegrityError } from './errors.js'

/** Bytes per read of the input file: the frame loop batches 1 MiB at a time. */
const READ_BYTES = 1024 * 1024
/** Who made the data key, as the SDK's keyring trace wants one; the real trace stays on the main thread. */
const TRACE_NAME = { keyNamespace: 'envcrypt-pool', keyName: 'main-thread' }

export interface PlainEncryptedDataKey {
  providerId: string
  providerInfo: string
  encryptedDataKey: Uint8Array
  /** Binary provider info (raw keyrings), serialized instead of providerInfo. */
  rawInfo?: Uint8Array
}

export interface EncryptFileTask {
  kind: 'encrypt'
  inputPath: string
  outputPath: string
  fsync: boolean
  suiteId: AlgorithmSuiteIdentifier
  encryptionContext: Record<string, string>
  encryptedDataKeys: PlainEncryptedDataKey[]
  dataKey: Uint8Array
  /** Signed suites: the ECDSA private key (PEM) and its compressed public point. */
  signatureKey?: { privateKeyPem: string; compressPoint: Uint8Array }
  frameLength: number
  plaintextLength?: number
}

export interface DecryptFileTask {
  kind: 'decrypt'
  inputPath: string
  outputPath: string
  fsync: boolean
  suiteId: AlgorithmSuiteIdentifier
  encryptionContext: Record<string, string>
  dataKey: Uint8Array
  /** Signed suites: the ECDSA verification key (PEM). */
  verificationKeyPem?: string
  /** The header (with its auth) the main thread parsed and resolved materials for; the worker re-reads the
   *  file and refuses it if its header is not byte for byte this one (the file changed in between). */
  expectedHeader: Uint8Array
  maxEncryptedDataKeys: number | false
  maxBodySize?: number
}

export type FileTask = EncryptFileTask | DecryptFileTask

export type FileTaskResult =
  | { ok: true; bytesIn: number; bytesOut: number; /** encrypt: the header written, with its auth */ headerBytes?: Uint8Array }
  | { ok: false; error: string; integrity: boolean }

/** The input file as a byte source of fresh 1 MiB buffers (the decrypt reader keeps references across reads). */
function* readFile(fd: number): Generator<Buffer> {
  for (;;) {
    const buffer = Buffer.allocUnsafe(READ_BYTES)
    const read = readSync(fd, buffer, 0, READ_BYTES, null)
    if (read === 0) return
    yield read === READ_BYTES ? buffer : buffer.subarray(0, read)
  }
}

function asyncSource(fd: number): ByteSource {
  return (async function* () {
    yield* readFile(fd)
  })()
}

/** A Writable over a file descriptor with synchronous writes: blocking is fine in a worker, and it saves a
 *  thread-pool hop per chunk. Remembers the first chunk, which encryptWithMaterials writes as the header. */
class FileSink extends Writable {
  firstChunk?: Buffer
  constructor(private readonly fd: number, private readonly fsync: boolean) {
    super({ highWaterMark: READ_BYTES })
  }
  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    try {
      this.firstChunk ??= Buffer.from(chunk)
      for (let at = 0; at < chunk.length; ) at += writeSync(this.fd, chunk, at)
      callback()
    } catch (err) {
      callback(err as Error)
    }
  }
  override _final(callback: (error?: Error | null) => void): void {
    try {
      if (this.fsync) fsyncSync(this.fd)
      callback()
    } catch (err) {
      callback(err as Error)
    }
  }
}

// The key classes accept the PEM strings they hold at run time (they only convert raw points), but their
// types list only binary keys.
type PemKey = Uint8Array

/** A data key in its own ArrayBuffer, as the SDK's materials require. */
const isolated = (bytes: Uint8Array) => new Uint8Array(bytes)

async function encryptFile(task: EncryptFileTask): Promise<FileTaskResult> {
  const suite = new NodeAlgorithmSuite(task.suiteId)
  const material = new NodeEncryptionMaterial(suite, task.encryptionContext).setUnencryptedDataKey(isolated(task.dataKey), {
    ...TRACE_NAME,
    flags: KeyringTraceFlag.WRAPPING_KEY_GENERATED_DATA_KEY,
  })
  for (const edk of task.encryptedDataKeys) {
    material.addEncryptedDataKey(new EncryptedDataKey(edk), KeyringTraceFlag.WRAPPING_KEY_ENCRYPTED_DATA_KEY)
  }
  if (task.signatureKey) material.setSignatureKey(new SignatureKey(task.signatureKey.privateKeyPem as unknown as PemKey, task.signatureKey.compressPoint, suite))
  const input = openSync(task.inputPath, 'r')
  try {
    const output = openSync(task.outputPath, 'w')
    try {
      const sink = new FileSink(output, task.fsync)
      const result = await encryptWithMaterials(material, asyncSource(input), sink, { frameLength: task.frameLength, plaintextLength: task.plaintextLength })
      return { ok: true, bytesIn: result.bytesIn, bytesOut: result.bytesOut, headerBytes: sink.firstChunk }
    } finally {
      closeSync(output)
    }
  } finally {
    closeSync(input)
  }
}

async function decryptFile(task: DecryptFileTask): Promise<FileTaskResult> {
  const suite = new NodeAlgorithmSuite(task.suiteId)
  const material = new NodeDecryptionMaterial(suite, task.encryptionContext).setUnencryptedDataKey(isolated(task.dataKey), {
    ...TRACE_NAME,
    flags: KeyringTraceFlag.WRAPPING_KEY_DECRYPTED_DATA_KEY,
  })
  if (task.verificationKeyPem) material.setVerificationKey(new VerificationKey(task.verificationKeyPem as unknown as PemKey, suite))
  const input = openSync(task.inputPath, 'r')
  try {
    const iterator = asyncSource(input)[Symbol.asyncIterator]()
    const { parsed, buffered } = await readHeader(iterator, task.maxEncryptedDataKeys)
    if (!Buffer.from(task.expectedHeader).equals(buffered.subarray(0, parsed.headerLength))) {
      throw new EnvcryptError('the input changed while it was being decrypted (its header is not the one read first)')
    }
    const output = openSync(task.outputPath, 'w')
    try {
      const result = await decryptWithMaterials(material, { parsed, headerBytes: buffered, rest: iterator }, new FileSink(output, task.fsync), {
        maxBodySize: task.maxBodySize,
      })
      return { ok: true, bytesIn: result.bytesIn, bytesOut: result.bytesOut }
    } finally {
      closeSync(output)
    }
  } finally {
    closeSync(input)
  }
}

/** Piscina's entry point. Errors come back as data: class identity does not survive the thread boundary. */
export default async function runFileTask(task: FileTask): Promise<FileTaskResult> {
  try {
    return task.kind === 'encrypt' ? await encryptFile(task) : await decryptFile(task)
  } catch (err) {
    return { ok: false, error: describeError(err), integrity: err instanceof IntegrityError }
  }
}
