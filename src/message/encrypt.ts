// The encrypt frame loop: header, frames in batches, signature footer, given the materials.
import { createPrivateKey, randomBytes, type KeyObject, type Sign } from 'node:crypto'
import type { Writable } from 'node:stream'
import { MessageFormat, getEncryptHelper, type NodeEncryptionMaterial } from '@aws-crypto/material-management-node'
import {
  MessageIdLength,
  SequenceIdentifier,
  serializeFactory,
  serializeMessageHeaderAuth,
  serializeSignatureInfo,
  type MessageHeader,
} from '@aws-crypto/serialize'
import { endOutput, writeTo, type ByteSource, type MessageResult } from './engine.js'
import { FileInput, FileOutput, encryptFileBody } from './file-io.js'
import { EnvcryptError } from '../errors.js'
import { BATCH_BYTES, BodyAad, FINAL_FRAME_AAD, FRAME_AAD, asBuffer, fromUtf8, nativeFramesFor, worthNative, type NativeFrames } from './frames.js'
import { checkFrameLength } from './resolve.js'

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

// utf8Sorting as the SDK's encrypt uses: the encryption context is serialized sorted by UTF-8 bytes.
const { serializeMessageHeader, buildMessageHeader, headerAuthIv } = serializeFactory(fromUtf8, { utf8Sorting: true })

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
function encryptFrames(state: EncryptState, plaintext: Buffer, isLast: boolean, into?: Buffer): Buffer {
  const { frameLength, ivLength, tagLength } = state
  const fullFrames = Math.floor(plaintext.length / frameLength)
  const finalLength = plaintext.length - fullFrames * frameLength
  if (!isLast && finalLength !== 0) throw new Error('internal: partial frame in a non-final batch')
  const regularFrameBytes = 4 + ivLength + frameLength + tagLength
  const finalFrameBytes = 4 + 4 + ivLength + 4 + finalLength + tagLength
  // `into`: a buffer the caller reuses (it wrote the previous batch out before asking for this one).
  const size = fullFrames * regularFrameBytes + (isLast ? finalFrameBytes : 0)
  const out = into && into.length >= size ? into.subarray(0, size) : Buffer.allocUnsafe(size)
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

/** Frames step for a local file (the pool's workers): synchronous reads and writes through the same two
 *  reused buffers for every batch (file-io.ts). `emit` writes synchronously to a FileOutput, so the sealed
 *  buffer is free again when it returns. */
function encryptFileBodyTo(state: EncryptState, input: FileInput, output: Writable | FileOutput, emit: (chunk: Buffer) => unknown, options: EncryptFrameOptions): number {
  if (!(output instanceof FileOutput)) throw new Error('internal: a file input needs a file output')
  const { frameLength, plaintextLength } = options
  const batchBytes = Math.max(1, Math.floor((options.batchBytes ?? BATCH_BYTES) / frameLength)) * frameLength
  return encryptFileBody(input, { batchBytes, frameLength, plaintextLength }, (plaintext, isLast, into) => encryptFrames(state, plaintext, isLast, into), emit)
}

/** Write one complete message for `material` (as the SDK's encrypt_stream does: random message ID, key
 *  derivation and commitment, header, header auth, frames, signature). Disposes the material's data key.
 *  Ends `output` only after the whole message is written. */
export async function encryptWithMaterials(
  material: NodeEncryptionMaterial,
  input: ByteSource | FileInput,
  output: Writable | FileOutput,
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
      if (output instanceof FileOutput) output.write(chunk)
      else await writeTo(output, chunk)
    }
    await emit(started.headerBytes)
    const bytesIn = input instanceof FileInput ? encryptFileBodyTo(state, input, output, emit, options) : await encryptBody(state, input, emit, options)
    // Footer: the signature over everything before it (signed suites only).
    if (signer) {
      const footer = asBuffer(serializeSignatureInfo(sign(signer, material)))
      bytesOut += footer.length
      if (output instanceof FileOutput) output.write(footer)
      else await writeTo(output, footer)
    }
    if (output instanceof FileOutput) output.flush()
    else await endOutput(output)
    return { header: started.header, bytesIn, bytesOut }
  } finally {
    native?.key.fill(0)
    helper.dispose()
  }
}
