// What both frame loops share: the batch size, the body AAD strings and buffer, and the choice of the native
// kernel for a message (with the key derivation it needs to reproduce the SDK's cipher).
import { hkdfSync } from 'node:crypto'
import { unwrapDataKey, type NodeDecryptionMaterial, type NodeEncryptionMaterial } from '@aws-crypto/material-management-node'
import { ContentAADString } from '@aws-crypto/serialize'
import { nativeKernel, nativeStats, type FrameKernel } from './native.js'


/** Plaintext per batch: frames are encrypted this many bytes at a time into one output buffer.
 *  1 MiB keeps the per-batch overhead (one write, one hash update, one allocation) negligible while the
 *  memory per message in flight stays small. A frame larger than this is one batch by itself. */
export const BATCH_BYTES = 1024 * 1024

export const fromUtf8 = (input: string) => Buffer.from(input, 'utf8')

export const FRAME_AAD = fromUtf8(ContentAADString.FRAME_STRING_ID)
export const FINAL_FRAME_AAD = fromUtf8(ContentAADString.FINAL_FRAME_STRING_ID)
export const SINGLE_BLOCK_AAD = fromUtf8(ContentAADString.NON_FRAMED_STRING_ID)

export function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

/** Body AAD (messageId || content string || uint32 sequence || uint64 content length), in a buffer reused
 *  across frames: setAAD copies it into the cipher, so rewriting the tail for the next frame is safe. */
export class BodyAad {
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
export interface NativeFrames {
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
export function nativeFramesFor(
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

/** Messages of fewer frames than this skip the native kernel: setting it up (a second HKDF and a header tag,
 *  ~80 us) costs more than it saves (~5 us a frame). Only when the caller knows the size (the pool's files). */
const NATIVE_MIN_FRAMES = 16
export const worthNative = (expectedBytes: number | undefined, frameLength: number) =>
  expectedBytes === undefined || !(frameLength > 0) || expectedBytes >= NATIVE_MIN_FRAMES * frameLength
