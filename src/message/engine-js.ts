// The "js" engine: same messages as the SDK's streams, but the frame loop is ours.
// (When the optional native kernel built, the frames of each batch go through it instead: see native.ts.)
//
// Everything about keys and formats stays in the SDK: the materials manager, key derivation, key commitment,
// signer/verifier (`getEncryptHelper`/`getDecryptionHelper`) and the layouts (`@aws-crypto/serialize`).
// What we own is the hot loop. The SDK's streams spend ~90 us per 4 KiB frame in stream plumbing
// (a Transform push per header/ciphertext/tag, a setImmediate per chunk, a hash update per piece);
// here a frame costs one createCipheriv + setAAD + update + final + getAuthTag (~12 us, ~10.6 us to decrypt,
// FACTS.md), frames are packed into one buffer per ~1 MiB batch, and the signature hash is fed once per batch.
//
// Each direction is split into "get materials" (may call KMS; runs the SDK's policy checks) and
// "run the frame loop given materials" (pure CPU + I/O), so the loop can later move to a worker.
import { createPrivateKey, hkdfSync, randomBytes, type KeyObject, type Sign } from 'node:crypto'
import type { Writable } from 'node:stream'
import {
  CommitmentPolicy,
  CommitmentPolicySuites,
  MessageFormat,
  NodeAlgorithmSuite,
  SignaturePolicy,
  SignaturePolicySuites,
  getDecryptionHelper,
  getEncryptHelper,
  needs,
  unwrapDataKey,
  type NodeDecryptionMaterial,
  type NodeEncryptionMaterial,
} from '@aws-crypto/material-management-node'
import {
  ContentAADString,
  ContentType,
  Maximum,
  MessageIdLength,
  SequenceIdentifier,
  decodeBodyHeader,
  deserializeSignature,
  serializeFactory,
  serializeMessageHeaderAuth,
  serializeSignatureInfo,
  type BodyHeader,
  type HeaderInfo,
  type MessageHeader,
} from '@aws-crypto/serialize'
import {
  asRefusal,
  endOutput,
  readHeader,
  writeTo,
  type ByteSource,
  type DecryptMessageOptions,
  type EncryptMessageOptions,
  type Engine,
  type MessageResult,
  type ParsedHeader,
} from './engine.js'
import { EnvcryptError, IntegrityError } from '../errors.js'
import { nativeKernel, nativeStats, type FrameKernel } from './native.js'

// The SDK's signer signs with the PEM text, which OpenSSL parses again for every message (~0.35 ms of a
// ~1.2 ms P-384 signature). Messages under one cached data key share their signing key, so keep the parsed
// key for the few most recent PEMs.
const parsedSigningKeys = new Map<string, KeyObject>()
function sign(signer: ReturnType<NonNullable<ReturnType<typeof getEncryptHelper>['getSigner']>>, material: NodeEncryptionMaterial): Buffer {
  const pem = material.signatureKey?.privateKey
  if (typeof pem !== 'string') return Buffer.from(signer.awsCryptoSign())
  let key = parsedSigningKeys.get(pem)
  if (!key) {
    key = createPrivateKey(pem)
    if (parsedSigningKeys.size >= 4) parsedSigningKeys.delete(parsedSigningKeys.keys().next().value!)
    parsedSigningKeys.set(pem, key)
  }
  return (signer as unknown as Sign).sign(key)
}

/** Plaintext per batch: frames are encrypted this many bytes at a time into one output buffer.
 *  1 MiB keeps the per-batch overhead (one write, one hash update, one allocation) negligible while the
 *  memory per message in flight stays small. A frame larger than this is one batch by itself. */
export const BATCH_BYTES = 1024 * 1024

const fromUtf8 = (input: string) => Buffer.from(input, 'utf8')
// utf8Sorting as the SDK's encrypt uses: the encryption context is serialized sorted by UTF-8 bytes.
const { serializeMessageHeader, buildMessageHeader, headerAuthIv } = serializeFactory(fromUtf8, { utf8Sorting: true })

const FRAME_AAD = fromUtf8(ContentAADString.FRAME_STRING_ID)
const FINAL_FRAME_AAD = fromUtf8(ContentAADString.FINAL_FRAME_STRING_ID)
const SINGLE_BLOCK_AAD = fromUtf8(ContentAADString.NON_FRAMED_STRING_ID)
/** The largest signature footer we buffer: a 2-byte length plus at most 65,535 bytes. */
const MAX_FOOTER_BYTES = 2 + 0xffff

// ---------- small helpers ----------

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

/** Body AAD (messageId || content string || uint32 sequence || uint64 content length), in a buffer reused
 *  across frames: setAAD copies it into the cipher, so rewriting the tail for the next frame is safe. */
class BodyAad {
  readonly buffer: Buffer
  private readonly tail: number
  /** messageId || content string: what the native kernel completes per frame itself. */
  readonly prefix: Buffer
  constructor(messageId: Uint8Array, contentString: Buffer) {
    this.buffer = Buffer.allocUnsafe(messageId.byteLength + contentString.length + 12)
    this.buffer.set(messageId, 0)
    contentString.copy(this.buffer, messageId.byteLength)
    this.tail = messageId.byteLength + contentString.length
    this.prefix = this.buffer.subarray(0, this.tail)
  }
  for(sequenceNumber: number, contentLength: number): Buffer {
    this.buffer.writeUInt32BE(sequenceNumber, this.tail)
    this.buffer.writeUInt32BE(Math.floor(contentLength / 0x1_0000_0000), this.tail + 4)
    this.buffer.writeUInt32BE(contentLength % 0x1_0000_0000, this.tail + 8)
    return this.buffer
  }
}

/** The frame kernel with the message's derived data key, when the frames of this message run natively. */
interface NativeFrames {
  kernel: FrameKernel
  key: Buffer
}

/** The AES-GCM key the SDK derives for a message (material_helpers.js `nodeKdf`, which the SDK does not
 *  export): non-KDF suites use the data key as is; v1 HKDF suites HKDF(suite hash, no salt, info = suite id
 *  || message id); committing suites HKDF-SHA512(salt = message id, info = suite id || "DERIVEKEY").
 *  A fresh buffer the caller zeroes when done. */
export function deriveDataKey(material: NodeEncryptionMaterial | NodeDecryptionMaterial, messageId: Uint8Array): Buffer {
  const { suite } = material
  const dataKey = Buffer.from(unwrapDataKey(material.getUnencryptedDataKey()))
  if (!suite.kdf) return dataKey
  try {
    if (suite.kdf !== 'HKDF' || !suite.kdfHash) throw new Error(`unsupported key derivation ${suite.kdf}`)
    const suiteId = Buffer.alloc(2)
    suiteId.writeUInt16BE(suite.id)
    const committing = suite.commitment === 'KEY'
    const salt = committing ? Buffer.from(messageId) : Buffer.alloc(0)
    const info = committing ? Buffer.concat([suiteId, Buffer.from('DERIVEKEY')]) : Buffer.concat([suiteId, messageId])
    return Buffer.from(hkdfSync(suite.kdfHash, dataKey, salt, info, suite.keyLengthBytes))
  } finally {
    dataKey.fill(0)
  }
}

/** Tests replace `derive` to prove that a wrong derived key falls back to the JavaScript loop. */
export const keyDerivation = { derive: deriveDataKey }

/** The native kernel for this message, if it is available and reproduces the SDK: the key we derived must
 *  give the same header authentication tag as the SDK's own cipher did (`expectedTag`, already computed or
 *  verified by the SDK), or the message stays on the JavaScript loop. */
function nativeFramesFor(
  material: NodeEncryptionMaterial | NodeDecryptionMaterial,
  messageId: Uint8Array,
  headerIv: Uint8Array,
  rawHeader: Buffer,
  expectedTag: Uint8Array,
): NativeFrames | undefined {
  const kernel = nativeKernel()
  if (!kernel || material.suite.ivLength !== 12 || material.suite.tagLength !== 128) return undefined
  let key: Buffer | undefined
  try {
    key = keyDerivation.derive(material, messageId)
    if (kernel.gcmTag(key, asBuffer(headerIv), rawHeader).equals(asBuffer(expectedTag))) {
      nativeStats.messages += 1
      return { kernel, key }
    }
  } catch {
    // Any surprise here (an unknown suite, a kernel error) means: use the JavaScript loop.
  }
  key?.fill(0)
  nativeStats.fallbacks += 1
  return undefined
}

function policyName(policy: string | undefined): string {
  return (policy ?? '').toLowerCase().replace(/_/g, '-')
}

// ---------- encrypt ----------

export interface EncryptFrameOptions {
  frameLength: number
  /** When given, more plaintext than this is refused (the caching materials manager counted this many bytes). */
  plaintextLength?: number
  /** Plaintext bytes per output batch; defaults to BATCH_BYTES. */
  batchBytes?: number
  /** Tests only: the message ID to use instead of random bytes (to compare engines byte for byte). */
  messageId?: Uint8Array
  /** Plaintext size the caller expects: a message of few frames stays on the JavaScript loop (usesNative). */
  expectedBytes?: number
}

/** Messages of fewer frames than this skip the native kernel: setting it up (a second HKDF and a header tag,
 *  ~80 us) costs more than it saves (~5 us a frame). Only when the caller knows the size (the pool's files). */
const NATIVE_MIN_FRAMES = 16
const worthNative = (expectedBytes: number | undefined, frameLength: number) =>
  expectedBytes === undefined || !(frameLength > 0) || expectedBytes >= NATIVE_MIN_FRAMES * frameLength

/** Validate the options and get encryption materials from the materials manager, with the SDK's checks
 *  (encrypt_stream.js): valid policy and maxEncryptedDataKeys, frame length bounds, the requested and the
 *  returned suite allowed by the commitment policy, EDK count. No suite requested: the CMM picks the
 *  policy's default. */
export async function resolveEncryptionMaterials(options: EncryptMessageOptions): Promise<NodeEncryptionMaterial> {
  const { commitmentPolicy, frameLength, plaintextLength } = options
  const maxEncryptedDataKeys = options.maxEncryptedDataKeys ?? false
  needs(CommitmentPolicy[commitmentPolicy], 'Invalid commitment policy.')
  needs(maxEncryptedDataKeys === false || maxEncryptedDataKeys >= 1, 'Invalid maxEncryptedDataKeys value.')
  checkFrameLength(frameLength)
  if (plaintextLength !== undefined && !(plaintextLength >= 0 && plaintextLength <= Maximum.BYTES_PER_MESSAGE)) {
    throw new EnvcryptError(`plaintext length ${plaintextLength} out of bounds`)
  }
  const suite = options.suiteId !== undefined ? new NodeAlgorithmSuite(options.suiteId) : undefined
  if (suite) checkEncryptSuite(commitmentPolicy, suite)
  const material = await options.cmm.getEncryptionMaterials({
    suite,
    encryptionContext: options.encryptionContext,
    plaintextLength,
    commitmentPolicy,
  })
  try {
    checkEncryptSuite(commitmentPolicy, material.suite)
    if (maxEncryptedDataKeys !== false && material.encryptedDataKeys.length > maxEncryptedDataKeys) {
      throw new EnvcryptError(
        `the keyrings produced ${material.encryptedDataKeys.length} encrypted data keys; maxEncryptedDataKeys allows ${maxEncryptedDataKeys}`,
      )
    }
  } catch (err) {
    material.zeroUnencryptedDataKey()
    throw err
  }
  return material
}

function checkFrameLength(frameLength: number): void {
  if (!(Number.isInteger(frameLength) && frameLength > 0 && frameLength <= Maximum.FRAME_SIZE)) {
    throw new EnvcryptError(`frame length ${frameLength} out of bounds (1 to ${Maximum.FRAME_SIZE})`)
  }
}

function checkEncryptSuite(commitmentPolicy: CommitmentPolicy, suite: NodeAlgorithmSuite): void {
  try {
    CommitmentPolicySuites.isEncryptEnabled(commitmentPolicy, suite)
  } catch {
    throw new EnvcryptError(`algorithm suite ${suite.name} is not allowed for encryption by commitment policy ${policyName(commitmentPolicy)}`)
  }
}

/** Per-message encryption state: plain data plus the SDK's cipher factory. */
interface EncryptState {
  getCipher: (iv: Uint8Array) => { setAAD(aad: Buffer): unknown; update(data: Buffer): Buffer; final(): Buffer; getAuthTag(): Buffer }
  frameLength: number
  ivLength: number
  tagLength: number
  nextSequenceNumber: number
  frameAad: BodyAad
  finalFrameAad: BodyAad
  native?: NativeFrames
}

/** Encrypt `plaintext` as frames into one buffer. Not last: `plaintext.length` is a multiple of the frame
 *  length and all frames are regular. Last: full frames, then the final frame with the remainder, which is
 *  empty when the plaintext is an exact multiple of the frame length (the SDK does the same: a frame is
 *  emitted as regular as soon as it is full, and the final frame is whatever is left at the end). */
function encryptFrames(state: EncryptState, plaintext: Buffer, isLast: boolean): Buffer {
  const { frameLength, ivLength, tagLength } = state
  const fullFrames = Math.floor(plaintext.length / frameLength)
  const finalLength = plaintext.length - fullFrames * frameLength
  if (!isLast && finalLength !== 0) throw new Error('internal: partial frame in a non-final batch')
  const regularFrameBytes = 4 + ivLength + frameLength + tagLength
  const finalFrameBytes = 4 + 4 + ivLength + 4 + finalLength + tagLength
  const out = Buffer.allocUnsafe(fullFrames * regularFrameBytes + (isLast ? finalFrameBytes : 0))
  const frames = fullFrames + (isLast ? 1 : 0)
  if (state.native) {
    // Same checks and message as the loop below, before the kernel (which refuses the same cases) runs.
    const lastSequenceNumber = state.nextSequenceNumber + frames - 1
    if (frames > 0 && lastSequenceNumber > (isLast ? SequenceIdentifier.SEQUENCE_NUMBER_END : SequenceIdentifier.SEQUENCE_NUMBER_END - 1)) {
      throw new EnvcryptError('message too large: more than 2^32-1 frames (use a larger frame length)')
    }
    const { kernel, key } = state.native
    const written = kernel.encryptFrames(key, plaintext, out, 0, state.frameAad.prefix, state.finalFrameAad.prefix, state.nextSequenceNumber, frameLength, isLast)
    if (written !== out.length) throw new Error('internal: frame layout mismatch (native)')
    state.nextSequenceNumber += frames
    return out
  }
  let at = 0
  let read = 0
  for (let i = 0; i < frames; i++) {
    const isFinal = i === fullFrames
    const sequenceNumber = state.nextSequenceNumber
    // Regular frames must not use the end marker as their sequence number; the final one may.
    if (sequenceNumber > (isFinal ? SequenceIdentifier.SEQUENCE_NUMBER_END : SequenceIdentifier.SEQUENCE_NUMBER_END - 1)) {
      throw new EnvcryptError('message too large: more than 2^32-1 frames (use a larger frame length)')
    }
    const contentLength = isFinal ? finalLength : frameLength
    if (isFinal) {
      at = out.writeUInt32BE(SequenceIdentifier.SEQUENCE_NUMBER_END, at)
    }
    at = out.writeUInt32BE(sequenceNumber, at)
    // Frame IV: zeros with the sequence number in the last four bytes (serialize's frameIv).
    const iv = out.subarray(at, at + ivLength)
    iv.fill(0, 0, ivLength - 4)
    iv.writeUInt32BE(sequenceNumber, ivLength - 4)
    at += ivLength
    if (isFinal) at = out.writeUInt32BE(contentLength, at)
    const cipher = state.getCipher(iv)
    cipher.setAAD((isFinal ? state.finalFrameAad : state.frameAad).for(sequenceNumber, contentLength))
    const ciphertext = cipher.update(plaintext.subarray(read, read + contentLength))
    at += ciphertext.copy(out, at)
    at += cipher.final().copy(out, at)
    at += cipher.getAuthTag().copy(out, at)
    read += contentLength
    state.nextSequenceNumber = sequenceNumber + 1
  }
  if (at !== out.length) throw new Error('internal: frame layout mismatch')
  return out
}

type EncryptHelper = ReturnType<typeof getEncryptHelper>
type Signer = ReturnType<NonNullable<EncryptHelper['getSigner']>>

/** A new message's header and what its frames need: the SDK's cipher factory for the derived key, and the
 *  native kernel when it is worth it. */
interface StartedMessage {
  header: MessageHeader
  /** The serialized header followed by its authentication (IV for v1, tag). */
  headerBytes: Buffer
  messageId: Uint8Array
  getCipher: EncryptState['getCipher']
  native?: NativeFrames
}

/** Header step of encryptWithMaterials: message ID, key commitment, header, header authentication tag. */
function startMessage(helper: EncryptHelper, material: NodeEncryptionMaterial, options: EncryptFrameOptions): StartedMessage {
  const { suite, encryptionContext, encryptedDataKeys } = material
  const { frameLength } = options
  const messageIdLength = suite.messageFormat === MessageFormat.V1 ? MessageIdLength.V1 : MessageIdLength.V2
  if (options.messageId && options.messageId.byteLength !== messageIdLength) throw new EnvcryptError(`message ID must be ${messageIdLength} bytes`)
  const messageId = options.messageId ?? randomBytes(messageIdLength)
  const { getCipher, keyCommitment } = helper.getCipherInfo(messageId)
  const header = buildMessageHeader({
    suite,
    encryptedDataKeys,
    encryptionContext,
    messageId,
    frameLength,
    suiteData: keyCommitment,
  }) as MessageHeader
  const rawHeader = asBuffer(serializeMessageHeader(header))
  const headerIv = headerAuthIv(suite.ivLength)
  const headerAuth = getCipher(headerIv)
  headerAuth.setAAD(rawHeader)
  headerAuth.update(Buffer.alloc(0))
  headerAuth.final()
  const headerAuthTag = headerAuth.getAuthTag()
  const headerBytes = Buffer.concat([rawHeader, serializeMessageHeaderAuth({ headerIv, headerAuthTag, messageHeader: header })])
  const native = worthNative(options.expectedBytes, frameLength) ? nativeFramesFor(material, messageId, headerIv, rawHeader, headerAuthTag) : undefined
  return { header, headerBytes, messageId, getCipher, native }
}

/** Frames step of encryptWithMaterials: gathers the input into batches of whole frames and emits each
 *  batch's frames; the last batch ends with the final frame. Returns the plaintext byte count. */
async function encryptBody(
  state: EncryptState,
  input: ByteSource,
  emit: (chunk: Buffer) => Promise<void>,
  options: EncryptFrameOptions,
): Promise<number> {
  const { frameLength, plaintextLength } = options
  let bytesIn = 0
  const framesPerBatch = Math.max(1, Math.floor((options.batchBytes ?? BATCH_BYTES) / frameLength))
  const batchBytes = framesPerBatch * frameLength
  // Plaintext waiting for a full batch; reused, since encryptFrames copies everything out synchronously.
  let pending: Buffer | undefined
  let pendingLength = 0
  for await (const chunk of input) {
    bytesIn += chunk.byteLength
    if (plaintextLength !== undefined && bytesIn > plaintextLength) {
      throw new EnvcryptError(`more plaintext than the declared length (${plaintextLength} bytes)`)
    }
    let rest = asBuffer(chunk)
    if (pendingLength > 0) {
      const take = Math.min(batchBytes - pendingLength, rest.length)
      rest.copy(pending!, pendingLength, 0, take)
      pendingLength += take
      rest = rest.subarray(take)
      if (pendingLength < batchBytes) continue
      await emit(encryptFrames(state, pending!, false))
      pendingLength = 0
    }
    // Whole batches straight from the input chunk, without copying.
    while (rest.length >= batchBytes) {
      await emit(encryptFrames(state, rest.subarray(0, batchBytes), false))
      rest = rest.subarray(batchBytes)
    }
    if (rest.length > 0) {
      // Never more than the declared length (more is refused above): small files need no 1 MiB buffer each.
      pending ??= Buffer.allocUnsafe(plaintextLength !== undefined ? Math.min(batchBytes, plaintextLength) : batchBytes)
      rest.copy(pending, 0)
      pendingLength = rest.length
    }
  }
  await emit(encryptFrames(state, pending ? pending.subarray(0, pendingLength) : Buffer.alloc(0), true))
  return bytesIn
}

/** Write one complete message for `material` (as the SDK's encrypt_stream does: random message ID, key
 *  derivation and commitment, header, header auth, frames, signature). Disposes the material's data key.
 *  Ends `output` only after the whole message is written. */
export async function encryptWithMaterials(
  material: NodeEncryptionMaterial,
  input: ByteSource,
  output: Writable,
  options: EncryptFrameOptions,
): Promise<MessageResult> {
  const helper = getEncryptHelper(material)
  let native: NativeFrames | undefined
  try {
    checkFrameLength(options.frameLength)
    const started = startMessage(helper, material, options)
    native = started.native
    const signer: Signer | undefined = helper.getSigner?.()
    const state: EncryptState = {
      getCipher: started.getCipher,
      frameLength: options.frameLength,
      ivLength: material.suite.ivLength,
      tagLength: material.suite.tagLength / 8,
      nextSequenceNumber: 1,
      frameAad: new BodyAad(started.messageId, FRAME_AAD),
      finalFrameAad: new BodyAad(started.messageId, FINAL_FRAME_AAD),
      native,
    }
    let bytesOut = 0
    const emit = async (chunk: Buffer) => {
      signer?.update(chunk)
      bytesOut += chunk.length
      await writeTo(output, chunk)
    }
    await emit(started.headerBytes)
    const bytesIn = await encryptBody(state, input, emit, options)
    // Footer: the signature over everything before it (signed suites only).
    if (signer) {
      const footer = asBuffer(serializeSignatureInfo(sign(signer, material)))
      bytesOut += footer.length
      await writeTo(output, footer)
    }
    await endOutput(output)
    return { header: started.header, bytesIn, bytesOut }
  } finally {
    native?.key.fill(0)
    helper.dispose()
  }
}

// ---------- decrypt ----------

/** The SDK's decrypt-side checks on a parsed header: the suite must be allowed by the commitment policy and,
 *  for `forbid-signed`, be unsigned. Also refuses a frame length above `maxBodySize` before anything is
 *  buffered (as the Python CLI's --max-length does). */
export function checkDecryptHeader(parsed: ParsedHeader, options: Pick<DecryptMessageOptions, 'commitmentPolicy' | 'signaturePolicy' | 'maxBodySize'>): NodeAlgorithmSuite {
  const { header } = parsed
  const suite = new NodeAlgorithmSuite(header.suiteId)
  checkDecryptSuite(suite, options, header)
  if (header.contentType !== ContentType.FRAMED_DATA && header.contentType !== ContentType.NO_FRAMING) {
    throw new IntegrityError(`malformed message header: unknown content type ${header.contentType}`)
  }
  if (options.maxBodySize && header.contentType === ContentType.FRAMED_DATA && header.frameLength > options.maxBodySize) {
    throw new EnvcryptError(`frame length ${header.frameLength} exceeds the maximum body size ${options.maxBodySize} (--max-length)`)
  }
  return suite
}

function checkDecryptSuite(
  suite: NodeAlgorithmSuite,
  options: Pick<DecryptMessageOptions, 'commitmentPolicy' | 'signaturePolicy'>,
  header: MessageHeader,
): void {
  const messageId = Buffer.from(header.messageId).toString('hex')
  try {
    CommitmentPolicySuites.isDecryptEnabled(options.commitmentPolicy, suite, messageId)
  } catch {
    throw new IntegrityError(
      `message uses algorithm suite ${suite.name}, which commitment policy ${policyName(options.commitmentPolicy)} refuses for decryption`,
    )
  }
  const signaturePolicy = options.signaturePolicy === 'forbid-signed' ? SignaturePolicy.ALLOW_ENCRYPT_FORBID_DECRYPT : SignaturePolicy.ALLOW_ENCRYPT_ALLOW_DECRYPT
  try {
    SignaturePolicySuites.isDecryptEnabled(signaturePolicy, suite, messageId)
  } catch {
    throw new IntegrityError(`message is signed (algorithm suite ${suite.name}); unsigned messages only were requested`)
  }
}

/** Unwrap the data key for a parsed header through the materials manager (may call KMS), re-checking the
 *  returned suite against the policies as the SDK's ParseHeaderStream does. */
export async function resolveDecryptionMaterials(
  parsed: ParsedHeader,
  options: Pick<DecryptMessageOptions, 'cmm' | 'commitmentPolicy' | 'signaturePolicy'>,
): Promise<NodeDecryptionMaterial> {
  const { header } = parsed
  const suite = new NodeAlgorithmSuite(header.suiteId)
  // A key no wrapping key opens, or a header whose public key does not decode, is a refused message.
  const material = await options.cmm
    .decryptMaterials({ suite, encryptionContext: header.encryptionContext, encryptedDataKeys: header.encryptedDataKeys })
    .catch((err: unknown) => Promise.reject(asRefusal(err)))
  try {
    checkDecryptSuite(material.suite, options, header)
  } catch (err) {
    material.zeroUnencryptedDataKey()
    throw err
  }
  return material
}

/** Reads a byte source into large contiguous buffers: frames are parsed in place and only the tail of a
 *  partial frame is ever copied. */
class ChunkReader {
  buffer: Buffer
  position = 0
  bytesRead: number
  ended = false
  constructor(
    first: Buffer,
    private readonly iterator: AsyncIterator<Uint8Array>,
    private readonly readTarget: number,
  ) {
    this.buffer = first
    this.bytesRead = first.length
  }
  get available(): number {
    return this.buffer.length - this.position
  }
  /** Make at least `needed` bytes available (reading up to `readTarget` while at it); false at end of input. */
  async ensure(needed: number): Promise<boolean> {
    if (this.available >= needed) return true
    if (this.ended) return false
    // Copy the unread tail: the source may reuse its buffers once asked for more.
    const parts: Buffer[] = this.available > 0 ? [Buffer.from(this.buffer.subarray(this.position))] : []
    let total = this.available
    const want = Math.max(needed, this.readTarget)
    while (total < want) {
      const next = await this.iterator.next()
      if (next.done) {
        this.ended = true
        break
      }
      if (next.value.byteLength === 0) continue
      parts.push(asBuffer(next.value))
      total += next.value.byteLength
      this.bytesRead += next.value.byteLength
    }
    this.buffer = parts.length === 1 ? parts[0] : Buffer.concat(parts, total)
    this.position = 0
    return total >= needed
  }
}

export interface DecryptBody {
  parsed: ParsedHeader
  /** The message from its first byte: at least the header (with its auth); may hold body bytes too. */
  headerBytes: Buffer
  /** The rest of the message after `headerBytes`. */
  rest: AsyncIterator<Uint8Array>
}

export interface DecryptFrameOptions {
  maxBodySize?: number
  /** The message's size, if the caller knows it: a message of few frames stays on the JavaScript loop. */
  expectedBytes?: number
  /** Ciphertext bytes to gather before decrypting a batch; defaults to BATCH_BYTES. */
  batchBytes?: number
}

const truncated = () => new IntegrityError('message is truncated: input ended before the final frame')

function malformed(err: unknown): IntegrityError {
  return new IntegrityError(`malformed message body: ${errorMessage(err)}`)
}

type DecryptHelper = ReturnType<typeof getDecryptionHelper>
type DecipherFactory = ReturnType<DecryptHelper['getDecipherInfo']>
type Verifier = ReturnType<NonNullable<DecryptHelper['getVerify']>>

/** What the body and footer steps of one message's decryption share. */
interface DecryptState {
  reader: ChunkReader
  headerInfo: HeaderInfo
  messageId: Uint8Array
  getDecipher: DecipherFactory
  /** The signature hash (signed suites): fed every byte of the message before the footer. */
  verify: Verifier | undefined
  ivLength: number
  tagLength: number
  maxBodySize: number | undefined
  write: (chunk: Buffer) => Promise<void>
}

/** Header step of decryptWithMaterials: the key commitment check (committing suites) and the header
 *  authentication tag; returns the decipher factory for the body. */
function authenticateHeader(helper: DecryptHelper, parsed: ParsedHeader, rawHeader: Buffer): DecipherFactory {
  const { header } = parsed
  let getDecipher: DecipherFactory
  try {
    getDecipher = helper.getDecipherInfo(header.messageId, 'suiteData' in header ? header.suiteData : undefined)
  } catch (err) {
    if (/Commitment does not match/.test(errorMessage(err))) {
      throw new IntegrityError('key commitment check failed: the message was altered or the wrong key was used')
    }
    throw err
  }
  try {
    const headerAuth = getDecipher(parsed.headerAuth.iv)
    headerAuth.setAAD(rawHeader)
    headerAuth.setAuthTag(asBuffer(parsed.headerAuth.tag))
    headerAuth.update(Buffer.alloc(0))
    headerAuth.final()
  } catch {
    throw new IntegrityError('header authentication failed: the message header was altered or the wrong key was used')
  }
  return getDecipher
}

function decodeAt(state: DecryptState, position: number): BodyHeader | false {
  try {
    return decodeBodyHeader(state.reader.buffer, state.headerInfo, position)
  } catch (err) {
    throw malformed(err)
  }
}

function checkBodySize(state: DecryptState, contentLength: number): void {
  if (state.maxBodySize && contentLength > state.maxBodySize) {
    throw new EnvcryptError(`frame of ${contentLength} bytes exceeds the maximum body size ${state.maxBodySize} (--max-length)`)
  }
}

/** The next complete frame at the reader's position, checked (body size, sequence order), or how many bytes
 *  from the position must be buffered before it can be read. Shared by the JavaScript and native loops. */
function nextFrame(state: DecryptState, expectedSequenceNumber: number): { frame: BodyHeader; contentStart: number; frameEnd: number } | { needed: number } {
  const { reader } = state
  const frame = decodeAt(state, reader.position)
  if (!frame) return { needed: reader.available + 1 }
  checkBodySize(state, frame.contentLength)
  if (frame.sequenceNumber !== expectedSequenceNumber) {
    throw new IntegrityError(`frames out of order: expected frame ${expectedSequenceNumber}, found ${frame.sequenceNumber}`)
  }
  const contentStart = frame.readPos
  const frameEnd = contentStart + frame.contentLength + state.tagLength
  if (frameEnd > reader.buffer.length) return { needed: frameEnd - reader.position }
  return { frame, contentStart, frameEnd }
}

/** Body step for an unframed message: one "frame" covering the whole body, possibly larger than memory
 *  likes; stream it through one decipher and hold the plaintext until the tag verifies (as the SDK does). */
async function decryptSingleBlock(state: DecryptState): Promise<void> {
  const { reader, verify, ivLength, tagLength } = state
  if (!(await reader.ensure(ivLength + 8))) throw truncated()
  const bodyHeader = decodeAt(state, reader.position)
  if (!bodyHeader) throw truncated()
  checkBodySize(state, bodyHeader.contentLength)
  verify?.update(reader.buffer.subarray(reader.position, bodyHeader.readPos))
  reader.position = bodyHeader.readPos
  const decipher = state.getDecipher(bodyHeader.iv)
  decipher.setAAD(new BodyAad(state.messageId, SINGLE_BLOCK_AAD).for(1, bodyHeader.contentLength))
  const plaintext: Buffer[] = []
  let remaining = bodyHeader.contentLength
  while (remaining > 0) {
    if (!(await reader.ensure(1))) throw truncated()
    const take = Math.min(remaining, reader.available)
    const ciphertext = reader.buffer.subarray(reader.position, reader.position + take)
    verify?.update(ciphertext)
    plaintext.push(decipher.update(ciphertext))
    reader.position += take
    remaining -= take
  }
  if (!(await reader.ensure(tagLength))) throw truncated()
  const tag = reader.buffer.subarray(reader.position, reader.position + tagLength)
  verify?.update(tag)
  reader.position += tagLength
  decipher.setAuthTag(tag)
  try {
    plaintext.push(decipher.final())
  } catch {
    throw new IntegrityError('body authentication failed: the message was altered or the wrong key was used')
  }
  for (const piece of plaintext) if (piece.length > 0) await state.write(piece)
}

/** Body step for a framed message on the JavaScript loop: every complete frame in the buffer is decrypted
 *  into one plaintext buffer, written once its frames are verified. */
async function decryptFramesJs(state: DecryptState): Promise<void> {
  const { reader, verify, tagLength } = state
  const frameAad = new BodyAad(state.messageId, FRAME_AAD)
  const finalFrameAad = new BodyAad(state.messageId, FINAL_FRAME_AAD)
  let expectedSequenceNumber = 1
  for (;;) {
    const batchStart = reader.position
    let plaintext: Buffer | undefined
    let plaintextLength = 0
    let finalSeen = false
    let needed: number
    for (;;) {
      const next = nextFrame(state, expectedSequenceNumber)
      if ('needed' in next) {
        needed = next.needed
        break
      }
      const { frame, contentStart, frameEnd } = next
      const decipher = state.getDecipher(frame.iv)
      decipher.setAAD((frame.isFinalFrame ? finalFrameAad : frameAad).for(frame.sequenceNumber, frame.contentLength))
      decipher.setAuthTag(reader.buffer.subarray(frameEnd - tagLength, frameEnd))
      const clear = decipher.update(reader.buffer.subarray(contentStart, frameEnd - tagLength))
      try {
        decipher.final()
      } catch {
        throw new IntegrityError(`frame ${frame.sequenceNumber} failed authentication: the message was altered or the wrong key was used`)
      }
      if (clear.length > 0) {
        plaintext ??= Buffer.allocUnsafe(reader.buffer.length - reader.position)
        plaintextLength += clear.copy(plaintext, plaintextLength)
      }
      reader.position = frameEnd
      expectedSequenceNumber += 1
      if (frame.isFinalFrame) {
        finalSeen = true
        break
      }
    }
    if (reader.position > batchStart) verify?.update(reader.buffer.subarray(batchStart, reader.position))
    if (plaintextLength > 0) await state.write(plaintext!.subarray(0, plaintextLength))
    if (finalSeen) return
    if (!(await reader.ensure(needed!))) throw truncated()
  }
}

/** decryptFramesJs with the kernel: the frames of a batch are parsed and checked here exactly as there
 *  (the SDK's decodeBodyHeader, sequence order, body size), then decrypted and verified in one call. */
async function decryptFramesNative(state: DecryptState, { kernel, key }: NativeFrames): Promise<void> {
  const { reader, verify, ivLength } = state
  const frameAad = new BodyAad(state.messageId, FRAME_AAD)
  const finalFrameAad = new BodyAad(state.messageId, FINAL_FRAME_AAD)
  // 5 numbers per frame (see FrameKernel.decryptFrames); grows when a batch holds more frames.
  let descriptors = new Float64Array(5 * 512)
  let expectedSequenceNumber = 1
  for (;;) {
    const batchStart = reader.position
    let frames = 0
    let plaintextLength = 0
    let finalSeen = false
    let needed: number | undefined
    // Verify what was collected so far: a tag failure in an earlier frame is reported before a parse
    // error in a later one, as the frame-by-frame loop does.
    const verifyCollected = (): Buffer => {
      const plaintext = Buffer.allocUnsafe(plaintextLength)
      const failed = kernel.decryptFrames(key, reader.buffer, descriptors.subarray(0, frames * 5), plaintext, frameAad.prefix, finalFrameAad.prefix)
      if (failed >= 0) {
        throw new IntegrityError(`frame ${descriptors[failed * 5 + 3]} failed authentication: the message was altered or the wrong key was used`)
      }
      return plaintext
    }
    try {
      for (;;) {
        const next = nextFrame(state, expectedSequenceNumber)
        if ('needed' in next) {
          needed = next.needed
          break
        }
        const { frame, contentStart, frameEnd } = next
        if ((frames + 1) * 5 > descriptors.length) {
          const grown = new Float64Array(descriptors.length * 2)
          grown.set(descriptors)
          descriptors = grown
        }
        // The IV sits right before the content (regular frames) or before the 4-byte content length.
        const ivOffset = contentStart - ivLength - (frame.isFinalFrame ? 4 : 0)
        const at = frames * 5
        descriptors[at] = ivOffset
        descriptors[at + 1] = contentStart
        descriptors[at + 2] = frame.contentLength
        descriptors[at + 3] = frame.sequenceNumber
        descriptors[at + 4] = frame.isFinalFrame ? 1 : 0
        frames += 1
        plaintextLength += frame.contentLength
        reader.position = frameEnd
        expectedSequenceNumber += 1
        if (frame.isFinalFrame) {
          finalSeen = true
          break
        }
      }
    } catch (err) {
      if (frames > 0) verifyCollected()
      throw err
    }
    const plaintext = frames > 0 ? verifyCollected() : undefined
    if (reader.position > batchStart) verify?.update(reader.buffer.subarray(batchStart, reader.position))
    if (plaintextLength > 0) await state.write(plaintext!)
    if (finalSeen) return
    if (!(await reader.ensure(needed!))) throw truncated()
  }
}

/** Footer step: the signature for signed suites; nothing at all otherwise. */
async function checkFooter(reader: ChunkReader, verify: Verifier | undefined): Promise<void> {
  if (verify) {
    await reader.ensure(MAX_FOOTER_BYTES + 1)
    if (reader.available > MAX_FOOTER_BYTES) throw new IntegrityError('unexpected data after the signature footer')
    const footer = reader.buffer.subarray(reader.position)
    let signature: Uint8Array
    try {
      signature = deserializeSignature(footer)
    } catch {
      throw new IntegrityError(footer.length === 0 ? 'signature footer missing: the message is truncated' : 'malformed signature footer')
    }
    reader.position = reader.buffer.length
    if (!verify.awsCryptoVerify(asBuffer(signature))) {
      throw new IntegrityError('signature verification failed: the message was altered')
    }
  } else if (await reader.ensure(1)) {
    // The SDK ignores bytes after the final frame of an unsigned message; they are not authenticated,
    // so refuse them rather than silently drop them.
    throw new IntegrityError('unexpected data after the final frame')
  }
}

/** Authenticate the header, decrypt and verify every frame, verify the signature, then end `output`.
 *  Plaintext of a frame is written only after its tag is verified; `output` is ended only after the footer
 *  signature is verified. Disposes the material's data key. */
export async function decryptWithMaterials(
  material: NodeDecryptionMaterial,
  body: DecryptBody,
  output: Writable,
  options: DecryptFrameOptions = {},
): Promise<MessageResult> {
  const helper = getDecryptionHelper(material)
  let native: NativeFrames | undefined
  try {
    const { parsed, headerBytes } = body
    const { header } = parsed
    const suite = material.suite
    const tagLength = suite.tagLength / 8
    const headerAuthLength = (header.version === MessageFormat.V1 ? suite.ivLength : 0) + tagLength
    const rawHeader = headerBytes.subarray(0, parsed.headerLength - headerAuthLength)
    const getDecipher = authenticateHeader(helper, parsed, rawHeader)
    const verify = helper.getVerify?.()
    verify?.update(headerBytes.subarray(0, parsed.headerLength))
    let bytesOut = 0
    const state: DecryptState = {
      reader: new ChunkReader(headerBytes.subarray(parsed.headerLength), body.rest, options.batchBytes ?? BATCH_BYTES),
      headerInfo: { messageHeader: header, algorithmSuite: suite } as HeaderInfo,
      messageId: header.messageId,
      getDecipher,
      verify,
      ivLength: suite.ivLength,
      tagLength,
      maxBodySize: options.maxBodySize,
      write: async (chunk: Buffer) => {
        bytesOut += chunk.length
        await writeTo(output, chunk)
      },
    }
    if (header.contentType === ContentType.NO_FRAMING) {
      await decryptSingleBlock(state)
    } else {
      if (worthNative(options.expectedBytes, header.frameLength)) native = nativeFramesFor(material, header.messageId, parsed.headerAuth.iv, rawHeader, parsed.headerAuth.tag)
      await (native ? decryptFramesNative(state, native) : decryptFramesJs(state))
    }
    await checkFooter(state.reader, verify)
    await endOutput(output)
    return { header, headerAuth: parsed.headerAuth, bytesIn: parsed.headerLength + state.reader.bytesRead, bytesOut }
  } finally {
    native?.key.fill(0)
    helper.dispose()
  }
}

export const jsEngine: Engine = {
  name: 'js',

  async encrypt(input, output, options) {
    const material = await resolveEncryptionMaterials(options)
    return encryptWithMaterials(material, input, output, { frameLength: options.frameLength, plaintextLength: options.plaintextLength })
  },

  async decrypt(input, output, options) {
    const maxEncryptedDataKeys = options.maxEncryptedDataKeys ?? false
    needs(CommitmentPolicy[options.commitmentPolicy], 'Invalid commitment policy.')
    needs(maxEncryptedDataKeys === false || maxEncryptedDataKeys >= 1, 'Invalid maxEncryptedDataKeys value.')
    const iterator = input[Symbol.asyncIterator]()
    try {
      const { parsed, buffered } = await readHeader(iterator, maxEncryptedDataKeys)
      checkDecryptHeader(parsed, options)
      // Before the materials manager: a refused header never costs a KMS call.
      if (options.onHeader) await options.onHeader(parsed)
      const material = await resolveDecryptionMaterials(parsed, options)
      return await decryptWithMaterials(material, { parsed, headerBytes: buffered, rest: iterator }, output, { maxBodySize: options.maxBodySize })
    } catch (err) {
      // Release the source (close a file stream) as `for await` would.
      await iterator.return?.().catch(() => undefined)
      throw err
    }
  },
}
