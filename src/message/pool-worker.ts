// The pool engine's worker: runs engine-js's frame loop on whole local files, given the materials the
// main thread resolved (KMS and the caching materials manager never leave the main thread, so caching limits
// stay exact). Only plain data crosses threads: the SDK's material objects are rebuilt here with the minimum
// the loop needs (suite, data key, EDKs, signing or verification key). The worker reads the input, creates,
// writes and commits the output temporary itself (io.ts writeTemporaryFile), so no file bytes are posted
// between threads and the main thread makes no file system call per file. Small files come in batches.
import { closeSync, openSync, readSync } from 'node:fs'
import { createECDH } from 'node:crypto'
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
import { decryptWithMaterials } from './decrypt.js'
import { encryptWithMaterials } from './encrypt.js'
import type { MessageHeader } from '@aws-crypto/serialize'
import { describeError, EnvcryptError, IntegrityError } from '../errors.js'
import { writeTemporaryFile, WriteStopped, type FileTarget, type TemporaryTarget } from '../store/local.js'
import { checkInto } from '../store/verify.js'
import { checkInputUnchanged, InputChangedError, type PlannedInput } from '../store/input-check.js'
import { nativeKernel } from './native.js'
import { prepareSmallEncrypt, sealSmallEncrypts, smallFileKernel, type SmallFileErrors } from './small-files.js'
import { FileInput, FileOutput, FrameBuffers } from './file-io.js'

/** This thread's buffers: every file it encrypts or decrypts reads, seals or opens, and writes through them
 *  (one file at a time per thread), so a big file allocates nothing per batch. */
const buffers = new FrameBuffers()

/** Bytes per read of the input file: the frame loop batches 1 MiB at a time. */
const READ_BYTES = 1024 * 1024
/** Bytes of the first read of a message to decrypt (headers are usually well under 4 KiB). */
const HEADER_READ_BYTES = 64 * 1024
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
  /** Checked before the first read and after the last (input-check.ts). */
  planned: PlannedInput
  output: TemporaryTarget
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
  /** Checked before the first read and after the last (input-check.ts). */
  planned: PlannedInput
  /** The input's size when the planner knew it: reads are sized to it. */
  inputSize?: number
  /** A file to write, or verify's check (nothing is written). */
  output: FileTarget
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

/** One post to a worker: several small files, or one large one. `stop` is shared with the main thread, which
 *  sets its first element when the run is interrupted. */
export interface FileBatch {
  tasks: FileTask[]
  stop: Int32Array
}

export type FileTaskResult =
  | {
      ok: true
      bytesIn: number
      bytesOut: number
      /** encrypt: the header written, with its auth (the JavaScript loop) */
      headerBytes?: Uint8Array
      /** encrypt: the header as built (the native small-file path; parsing it again costs the main thread ~0.1 ms) */
      header?: MessageHeader
    }
  | { ok: false; error: string; integrity: boolean; interrupted?: boolean }

/** (Exported for tests.) The input file as a byte source of fresh buffers (the decrypt reader keeps references across reads): at
 *  most 1 MiB, and no larger than what is expected to be left, so a 4 KiB file costs a 4 KiB buffer and a
 *  one-byte read that finds the end. Stops the run's work at the next read once `stopped()`. */
export function* readFile(fd: number, expectedSize: number | undefined, stopped: () => boolean): Generator<Buffer> {
  // Bytes still expected; undefined once unknown (no size given, or the file turned out larger).
  let left = expectedSize
  for (;;) {
    if (stopped()) throw new WriteStopped('interrupted')
    const size = left === undefined ? READ_BYTES : Math.max(1, Math.min(READ_BYTES, left))
    const buffer = Buffer.allocUnsafe(size)
    const read = readSync(fd, buffer, 0, size, null)
    if (read === 0) return
    if (left !== undefined) left = left > read ? left - read : left === read ? 0 : undefined
    yield read === size ? buffer : buffer.subarray(0, read)
  }
}

function asyncSource(fd: number, expectedSize: number | undefined, stopped: () => boolean): ByteSource {
  return (async function* () {
    yield* readFile(fd, expectedSize, stopped)
  })()
}

// The key classes accept the PEM strings they hold at run time (they only convert raw points), but their
// types list only binary keys.
type PemKey = Uint8Array

/** A data key in its own ArrayBuffer, as the SDK's materials require. */
const isolated = (bytes: Uint8Array) => new Uint8Array(bytes)

/** A failed read of a file that changed meanwhile (more bytes than planned, a truncated message) is reported
 *  as the change, which is the cause. */
const changedOr = (fd: number, task: FileTask) => (err: unknown): never => {
  checkInputUnchanged(fd, task.inputPath, task.planned)
  throw err
}

async function encryptFile(task: EncryptFileTask, stopped: () => boolean): Promise<FileTaskResult> {
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
    checkInputUnchanged(input, task.inputPath, task.planned)
    return await writeTemporaryFile(task.output, stopped, async (output) => {
      const sink = new FileOutput(output, buffers)
      const result = await encryptWithMaterials(material, new FileInput(input, buffers, stopIf(stopped)), sink, {
        frameLength: task.frameLength,
        plaintextLength: task.plaintextLength,
        expectedBytes: task.plaintextLength,
      }).catch(changedOr(input, task))
      checkInputUnchanged(input, task.inputPath, task.planned, result.bytesIn)
      return { ok: true, bytesIn: result.bytesIn, bytesOut: result.bytesOut, headerBytes: sink.firstChunk }
    })
  } finally {
    closeSync(input)
  }
}

async function decryptFile(task: DecryptFileTask, stopped: () => boolean): Promise<FileTaskResult> {
  const suite = new NodeAlgorithmSuite(task.suiteId)
  const material = new NodeDecryptionMaterial(suite, task.encryptionContext).setUnencryptedDataKey(isolated(task.dataKey), {
    ...TRACE_NAME,
    flags: KeyringTraceFlag.WRAPPING_KEY_DECRYPTED_DATA_KEY,
  })
  if (task.verificationKeyPem) material.setVerificationKey(new VerificationKey(task.verificationKeyPem as unknown as PemKey, suite))
  const input = openSync(task.inputPath, 'r')
  try {
    checkInputUnchanged(input, task.inputPath, task.planned)
    // Only the header's first bytes here (the whole of a small file): the body is read into this thread's buffers.
    const headerRead = task.inputSize === undefined ? HEADER_READ_BYTES : Math.min(task.inputSize, HEADER_READ_BYTES)
    const iterator = asyncSource(input, headerRead, stopped)[Symbol.asyncIterator]()
    const { parsed, buffered } = await readHeader(iterator, task.maxEncryptedDataKeys)
    if (!Buffer.from(task.expectedHeader).equals(buffered.subarray(0, parsed.headerLength))) {
      throw new EnvcryptError('the input changed while it was being decrypted (its header is not the one read first)')
    }
    const target = task.output
    const decryptInto = async (output: FileOutput): Promise<FileTaskResult> => {
      const result = await decryptWithMaterials(material, { parsed, headerBytes: buffered, rest: new FileInput(input, buffers, stopIf(stopped)) }, output, {
        maxBodySize: task.maxBodySize,
        expectedBytes: task.inputSize,
        outputKeepsNothing: 'check' in task.output,
      }).catch(changedOr(input, task))
      checkInputUnchanged(input, task.inputPath, task.planned, result.bytesIn)
      return { ok: true, bytesIn: result.bytesIn, bytesOut: result.bytesOut }
    }
    return 'check' in target ? await checkInto(target, buffers, decryptInto) : await writeTemporaryFile(target, stopped, (fd) => decryptInto(new FileOutput(fd, buffers)))
  } finally {
    closeSync(input)
  }
}

const stopIf = (stopped: () => boolean) => () => {
  if (stopped()) throw new WriteStopped('interrupted')
}

async function runFileTask(task: FileTask, stopped: () => boolean): Promise<FileTaskResult> {
  try {
    if (stopped()) throw new WriteStopped('interrupted')
    return task.kind === 'encrypt' ? await encryptFile(task, stopped) : await decryptFile(task, stopped)
  } catch (err) {
    if (err instanceof WriteStopped) return { ok: false, error: 'interrupted', integrity: false, interrupted: true }
    return { ok: false, error: describeError(err), integrity: err instanceof IntegrityError }
  } finally {
    task.dataKey.fill(0)
  }
}

const SMALL_FILE_ERRORS: SmallFileErrors = {
  changed: (reason) => new InputChangedError(`the input changed while being read (${reason}); nothing was written for it, run again`),
  exists: (finalPath) => new EnvcryptError(`output ${finalPath} already exists (not overwritten)`),
  interrupted: () => new WriteStopped('interrupted'),
}

/** The batch's small files to encrypt, all in one native call (small-files.ts), when the kernel has that path.
 *  Fills their slots in `results`; the others stay undefined for the JavaScript path. */
function runSmallEncrypts(batch: FileBatch, results: Array<FileTaskResult | undefined>): void {
  const kernel = smallFileKernel()
  if (!kernel) return
  const picked: number[] = []
  const prepared: Array<NonNullable<ReturnType<typeof prepareSmallEncrypt>>> = []
  batch.tasks.forEach((task, i) => {
    if (task.kind !== 'encrypt') return
    const job = prepareSmallEncrypt(task)
    if (!job) return
    picked.push(i)
    prepared.push(job)
  })
  if (prepared.length === 0) return
  const sealed = sealSmallEncrypts(kernel, prepared, batch.stop, SMALL_FILE_ERRORS)
  sealed.forEach((result, k) => {
    const task = batch.tasks[picked[k]!]!
    task.dataKey.fill(0)
    results[picked[k]!] = result.ok
      ? result
      : { ok: false, error: describeError(result.error), integrity: false, ...(result.interrupted ? { interrupted: true } : {}) }
  })
}

/** Piscina's other entry point (`name: 'makeSigningKeyPairs'`): key pairs for the main thread's materials
 *  manager (keys/signing-keys.ts), from the native kernel or else Node's ECDH. */
export function makeSigningKeyPairs({ curve, count }: { curve: string; count: number }): Uint8Array {
  const kernel = nativeKernel() as { makeSigningKeyPairs?: (curve: string, count: number) => Buffer } | undefined
  if (kernel?.makeSigningKeyPairs) return new Uint8Array(kernel.makeSigningKeyPairs(curve, count))
  const records: Buffer[] = []
  for (let i = 0; i < count; i++) {
    const ecdh = createECDH(curve)
    ecdh.generateKeys()
    const point = ecdh.getPublicKey(undefined, 'compressed')
    const raw = ecdh.getPrivateKey()
    // Not zeroed here: records holds this very buffer until the concat below (zeroing it here wrote all-zero
    // scalars, whose signatures never verified); every record is zeroed after the concat.
    records.push(Buffer.alloc(point.length - 1 - raw.length), raw, point)
  }
  const bytes = new Uint8Array(Buffer.concat(records))
  records.forEach((record) => record.fill(0))
  return bytes
}

/** Piscina's entry point: the batch's files one after the other (small encrypts first, in one native call).
 *  Errors come back as data: class identity does not survive the thread boundary. */
export default async function runFileBatch(batch: FileBatch): Promise<FileTaskResult[]> {
  const stopped = () => Atomics.load(batch.stop, 0) !== 0
  const results: Array<FileTaskResult | undefined> = new Array(batch.tasks.length)
  runSmallEncrypts(batch, results)
  for (const [i, task] of batch.tasks.entries()) results[i] ??= await runFileTask(task, stopped)
  return results as FileTaskResult[]
}
