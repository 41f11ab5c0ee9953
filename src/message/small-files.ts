// The pool worker's path for small files to encrypt: a batch of them in one native call (sealSmallFiles in
// native/small-files.cc), which reads each input, seals its frames, signs it and publishes the output.
//
// JavaScript keeps what defines the message format: the header is built by the Encryption SDK's own
// serializer, and the key derivation mirrors the SDK's (material_helpers.js nodeKdf), checked against the
// SDK's reader by test/small-files.test.ts for every suite. What the kernel adds (frames, header auth tag,
// signature footer) has the same layout as engine-js writes. Without the kernel (not built, ENVCRYPT_NATIVE=0)
// or for anything unusual (a large file, an unknown size, a signing key in another form), the caller runs
// the task on engine-js's loop instead: `prepareSmallEncrypt` returns undefined.
import { hkdfSync, randomFillSync } from 'node:crypto'
import { constants as osConstants } from 'node:os'
import { dirname } from 'node:path'
import { EncryptedDataKey, MessageFormat, NodeAlgorithmSuite, type AlgorithmSuiteIdentifier } from '@aws-crypto/material-management-node'
import { ContentAADString, MessageIdLength, serializeFactory, type MessageHeader } from '@aws-crypto/serialize'
import { nativeKernel } from './native.js'

/** Per thread, for tests: files the native path committed. `namedTemporary` makes it write through the
 *  reserved temporary name (the fallback where O_TMPFILE is missing) instead of an unnamed file. */
export const smallFileStats = { files: 0 }
export const smallFileOptions = { namedTemporary: false }

/** Files up to this size take the native path (read and sealed whole in memory). */
const SMALL_FILE_MAX_BYTES = 1024 * 1024

/** What the native path needs of a pool encrypt task (pool-worker.ts EncryptFileTask has these fields). */
export interface SmallEncryptTask {
  inputPath: string
  output: { temporaryPath: string; finalPath: string; mode: number; fsync: boolean; noClobber: boolean }
  suiteId: AlgorithmSuiteIdentifier
  encryptionContext: Record<string, string>
  encryptedDataKeys: Array<{ providerId: string; providerInfo: string; encryptedDataKey: Uint8Array; rawInfo?: Uint8Array }>
  dataKey: Uint8Array
  signatureKey?: { privateKeyPem: string; compressPoint: Uint8Array }
  frameLength: number
  plaintextLength?: number
  /** What the planner saw (store/input-check.ts): the kernel makes the same checks before and after its read. */
  planned?: { size?: number; mtimeMs?: number; ino?: number }
}

export type SmallFileResult =
  | { ok: true; bytesIn: number; bytesOut: number; header: MessageHeader }
  | { ok: false; error: unknown; interrupted?: boolean }

interface SealJob {
  input: string
  plannedSize: number
  plannedMtimeMs?: number
  plannedIno?: number
  header: Buffer
  headerAuthIv: boolean
  key: Buffer
  messageId: Buffer
  frameLength: number
  signingKey?: Buffer
  curve?: string
  hash?: string
  directory: string
  temporaryPath: string
  finalPath: string
  mode: number
  fsync: boolean
  noClobber: boolean
  namedTemporary: boolean
}

interface SealOutcome {
  kind: 'ok' | 'system' | 'changed' | 'exists' | 'interrupted' | 'internal'
  bytesIn: number
  bytesOut: number
  headerAuth?: Buffer
  errno?: number
  syscall?: string
  path?: string
  reason?: string
}

interface SmallFileKernel {
  sealSmallFiles(jobs: SealJob[], frameString: Buffer, finalFrameString: Buffer, stop: Int32Array): SealOutcome[]
}

/** The kernel's small-file entry, when the addon built with it and ENVCRYPT_NATIVE is not 0. */
export function smallFileKernel(): SmallFileKernel | undefined {
  const kernel = nativeKernel() as Partial<SmallFileKernel> | undefined
  return typeof kernel?.sealSmallFiles === 'function' ? (kernel as SmallFileKernel) : undefined
}

const FRAME_STRING = Buffer.from(ContentAADString.FRAME_STRING_ID, 'utf8')
const FINAL_FRAME_STRING = Buffer.from(ContentAADString.FINAL_FRAME_STRING_ID, 'utf8')
const KEY_LABEL = Buffer.from('DERIVEKEY')
const COMMIT_LABEL = Buffer.from('COMMITKEY')
// As the SDK's encrypt: the encryption context serialized sorted by UTF-8 bytes.
const { serializeMessageHeader, buildMessageHeader } = serializeFactory((text: string) => Buffer.from(text, 'utf8'), { utf8Sorting: true })

const suites = new Map<AlgorithmSuiteIdentifier, NodeAlgorithmSuite>()
function suiteFor(id: AlgorithmSuiteIdentifier): NodeAlgorithmSuite {
  let suite = suites.get(id)
  if (!suite) suites.set(id, (suite = new NodeAlgorithmSuite(id)))
  return suite
}

// Message IDs come from one random fill per 64 messages rather than one call each.
const randomPool = Buffer.alloc(64 * MessageIdLength.V2)
let randomLeft = 0
function messageIdOf(length: number): Buffer {
  if (randomLeft < length) {
    randomFillSync(randomPool)
    randomLeft = randomPool.length
  }
  randomLeft -= length
  return Buffer.from(randomPool.subarray(randomLeft, randomLeft + length))
}

/** The SDK's key derivation (nodeKdf): the data key as is without a KDF; v1 HKDF suites HKDF(no salt,
 *  info = suite id || message id); committing suites HKDF-SHA512(salt = message id) expanded twice, to the
 *  key (info = suite id || "DERIVEKEY") and to the 32-byte commitment (info = "COMMITKEY"). */
function deriveKeys(suite: NodeAlgorithmSuite, dataKey: Uint8Array, messageId: Buffer): { key: Buffer; commitment?: Buffer } {
  if (!suite.kdf) return { key: Buffer.from(dataKey) }
  if (suite.kdf !== 'HKDF' || !suite.kdfHash) throw new Error(`unsupported key derivation ${suite.kdf}`)
  const suiteId = Buffer.alloc(2)
  suiteId.writeUInt16BE(suite.id)
  if (suite.commitment !== 'KEY') {
    return { key: Buffer.from(hkdfSync(suite.kdfHash, dataKey, Buffer.alloc(0), Buffer.concat([suiteId, messageId]), suite.keyLengthBytes)) }
  }
  const key = Buffer.from(hkdfSync(suite.kdfHash, dataKey, messageId, Buffer.concat([suiteId, KEY_LABEL]), suite.keyLengthBytes))
  const commitment = Buffer.from(hkdfSync(suite.kdfHash, dataKey, messageId, COMMIT_LABEL, (suite.commitmentLength ?? 256) / 8))
  return { key, commitment }
}

/** The private scalar of an RFC 5915 EC private key PEM (what the SDK's SignatureKey holds), without OpenSSL's
 *  decoders (~0.4 ms a key): SEQUENCE { INTEGER 1, OCTET STRING scalar, ... }. Undefined for anything else. */
export function signingScalarOf(pem: string, fieldBytes: number): Buffer | undefined {
  const match = /^-----BEGIN EC PRIVATE KEY-----\n([A-Za-z0-9+/=\n]+)-----END EC PRIVATE KEY-----\n?$/.exec(pem)
  if (!match) return undefined
  const der = Buffer.from(match[1]!.replace(/\n/g, ''), 'base64')
  if (der[0] !== 0x30) return undefined
  // The outer length: short form, or long form with one or two length bytes.
  const lengthBytes = der[1]! < 0x80 ? 0 : der[1]! & 0x7f
  if (lengthBytes > 2) return undefined
  const at = 2 + lengthBytes
  // The scalar may be shorter than the field (ECDH.getPrivateKey drops leading zero bytes): padded back here.
  const length = der[at + 4]!
  if (der[at] !== 0x02 || der[at + 1] !== 0x01 || der[at + 2] !== 0x01 || der[at + 3] !== 0x04 || !(length >= 1 && length <= fieldBytes)) return undefined
  const scalar = der.subarray(at + 5, at + 5 + length)
  if (scalar.length !== length) return undefined
  const padded = Buffer.alloc(fieldBytes)
  scalar.copy(padded, fieldBytes - length)
  der.fill(0)
  return padded
}

const FIELD_BYTES: Record<string, number> = { secp384r1: 48, prime256v1: 32 }

/** The native job for `task` plus the parsed header, or undefined when this task is not one for the native path. */
export function prepareSmallEncrypt(task: SmallEncryptTask): { job: SealJob; header: MessageHeader } | undefined {
  const { plaintextLength, frameLength } = task
  if (plaintextLength === undefined || !(plaintextLength >= 0 && plaintextLength <= SMALL_FILE_MAX_BYTES)) return undefined
  if (!(Number.isInteger(frameLength) && frameLength >= 1 && frameLength <= 0xffffffff)) return undefined
  const suite = suiteFor(task.suiteId)
  if (suite.ivLength !== 12 || suite.tagLength !== 128) return undefined
  let signing: Pick<SealJob, 'signingKey' | 'curve' | 'hash'> = {}
  if (suite.signatureCurve) {
    const fieldBytes = FIELD_BYTES[suite.signatureCurve]
    const scalar = fieldBytes && task.signatureKey ? signingScalarOf(task.signatureKey.privateKeyPem, fieldBytes) : undefined
    if (!scalar || !suite.signatureHash) return undefined
    signing = { signingKey: scalar, curve: suite.signatureCurve, hash: suite.signatureHash.toUpperCase() }
  }
  const v1 = suite.messageFormat === MessageFormat.V1
  const messageId = messageIdOf(v1 ? MessageIdLength.V1 : MessageIdLength.V2)
  const { key, commitment } = deriveKeys(suite, task.dataKey, messageId)
  const header = buildMessageHeader({
    suite,
    encryptedDataKeys: task.encryptedDataKeys.map((edk) => new EncryptedDataKey(edk)),
    encryptionContext: task.encryptionContext,
    messageId,
    frameLength,
    suiteData: commitment,
  }) as MessageHeader
  const rawHeader = Buffer.from(serializeMessageHeader(header))
  const { output } = task
  const job: SealJob = {
    input: task.inputPath,
    plannedSize: task.planned?.size ?? plaintextLength,
    ...(task.planned?.mtimeMs !== undefined ? { plannedMtimeMs: task.planned.mtimeMs } : {}),
    ...(task.planned?.ino !== undefined ? { plannedIno: task.planned.ino } : {}),
    header: rawHeader,
    headerAuthIv: v1,
    key,
    messageId,
    frameLength,
    ...signing,
    directory: dirname(output.finalPath),
    temporaryPath: output.temporaryPath,
    finalPath: output.finalPath,
    mode: output.mode,
    fsync: output.fsync,
    noClobber: output.noClobber,
    namedTemporary: smallFileOptions.namedTemporary,
  }
  return { job, header }
}

const ERRNO_NAMES = new Map(Object.entries(osConstants.errno).map(([name, number]) => [number, name]))

/** A native system-call failure as Node's fs would have thrown it (code, syscall, path), for describeError. */
function systemError(outcome: SealOutcome): Error {
  const code = ERRNO_NAMES.get(outcome.errno ?? 0) ?? `errno ${outcome.errno}`
  const error = new Error(`${code}: ${outcome.syscall} '${outcome.path}'`) as NodeJS.ErrnoException
  error.code = code
  error.errno = outcome.errno
  error.syscall = outcome.syscall
  error.path = outcome.path
  return error
}

/** What an outcome means for the file (errors as values: the worker reports them as data). */
function resultOf(outcome: SealOutcome, header: MessageHeader, errors: SmallFileErrors): SmallFileResult {
  switch (outcome.kind) {
    case 'ok':
      smallFileStats.files++
      return { ok: true, bytesIn: outcome.bytesIn, bytesOut: outcome.bytesOut, header }
    case 'system':
      return { ok: false, error: systemError(outcome) }
    case 'changed':
      return { ok: false, error: errors.changed(outcome.reason ?? 'changed') }
    case 'exists':
      return { ok: false, error: errors.exists(outcome.path ?? '') }
    case 'interrupted':
      return { ok: false, error: errors.interrupted(), interrupted: true }
    default:
      return { ok: false, error: new Error(`internal: native small-file path: ${outcome.reason}`) }
  }
}

/** The errors a caller wants for the cases it names itself. */
export interface SmallFileErrors {
  changed(reason: string): unknown
  exists(finalPath: string): unknown
  interrupted(): unknown
}

/** Seal the prepared files in one native call. Keys are zeroed before this returns. */
export function sealSmallEncrypts(
  kernel: SmallFileKernel,
  prepared: Array<{ job: SealJob; header: MessageHeader }>,
  stop: Int32Array,
  errors: SmallFileErrors,
): SmallFileResult[] {
  try {
    const outcomes = kernel.sealSmallFiles(prepared.map((p) => p.job), FRAME_STRING, FINAL_FRAME_STRING, stop)
    return outcomes.map((outcome, i) => resultOf(outcome, prepared[i]!.header, errors))
  } finally {
    for (const { job } of prepared) {
      job.key.fill(0)
      job.signingKey?.fill(0)
    }
  }
}
