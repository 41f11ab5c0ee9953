// The native frame kernel against the JavaScript frame loop: byte-for-byte the same messages for the same
// materials and message ID, the SDK reads what the kernel writes, tampering is caught by the kernel's tag
// check, and the kernel refuses out-of-range offsets instead of writing past a buffer.
// (The full differential suite runs on the kernel in engine-js.test.ts and on JavaScript in
// engine-js-fallback.test.ts.)
import { afterEach, describe, expect, it, onTestFinished } from 'vitest'
import fc from 'fast-check'
import { Writable } from 'node:stream'
import { randomBytes } from 'node:crypto'
import {
  AlgorithmSuiteIdentifier,
  CommitmentPolicy,
  CommitmentPolicySuites,
  EncryptedDataKey,
  KeyringTraceFlag,
  NodeAlgorithmSuite,
  NodeDecryptionMaterial,
  NodeDefaultCryptographicMaterialsManager,
  NodeEncryptionMaterial,
  RawAesKeyringNode,
  RawAesWrappingSuiteIdentifier,
  buildClient,
  getEncryptHelper,
  unwrapDataKey,
} from '@aws-crypto/client-node'
import { SignatureKey } from '@aws-crypto/material-management'
import { jsEngine } from '../src/message/engine-js.js'
import { decryptWithMaterials } from '../src/message/decrypt.js'
import { encryptWithMaterials } from '../src/message/encrypt.js'
import { deriveDataKey, keyDerivation } from '../src/message/frames.js'
import { readHeader } from '../src/message/engine.js'
import { IntegrityError } from '../src/errors.js'
import { nativeActive, nativeKernel, nativeLoadError, nativeStats } from '../src/message/native.js'

const { REQUIRE_ENCRYPT_REQUIRE_DECRYPT, REQUIRE_ENCRYPT_ALLOW_DECRYPT, FORBID_ENCRYPT_ALLOW_DECRYPT } = CommitmentPolicy
const envBefore = process.env.ENVCRYPT_NATIVE
afterEach(() => {
  if (envBefore === undefined) delete process.env.ENVCRYPT_NATIVE
  else process.env.ENVCRYPT_NATIVE = envBefore
})

const built = nativeActive()
const reason = built ? '' : ` (skipped: the native addon did not build or load: ${nativeLoadError() ?? 'ENVCRYPT_NATIVE=0'})`

class Sink extends Writable {
  chunks: Buffer[] = []
  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void) {
    this.chunks.push(Buffer.from(chunk))
    done()
  }
  get bytes(): Buffer {
    return Buffer.concat(this.chunks)
  }
}

async function* pieces(data: Buffer, size: number): AsyncGenerator<Uint8Array> {
  for (let at = 0; at < data.length; at += size) yield new Uint8Array(data.subarray(at, at + size))
}

const wrappingKey = randomBytes(32)
const cmm = () =>
  new NodeDefaultCryptographicMaterialsManager(
    new RawAesKeyringNode({ keyName: 'k', keyNamespace: 'native-test', unencryptedMasterKey: new Uint8Array(wrappingKey), wrappingSuite: RawAesWrappingSuiteIdentifier.AES256_GCM_IV12_TAG16_NO_PADDING }),
  )
const allSuites = Object.values(AlgorithmSuiteIdentifier).filter((v): v is AlgorithmSuiteIdentifier => typeof v === 'number')
const committing = (suite: AlgorithmSuiteIdentifier) => !!CommitmentPolicySuites[REQUIRE_ENCRYPT_REQUIRE_DECRYPT].encryptEnabledSuites[suite]
const policyFor = (suite: AlgorithmSuiteIdentifier) => (committing(suite) ? REQUIRE_ENCRYPT_REQUIRE_DECRYPT : FORBID_ENCRYPT_ALLOW_DECRYPT)

/** One set of encryption materials as plain data, so the same data key, EDKs and signing key can be handed
 *  to two encryptions (the SDK's material objects are single-use). */
async function plainMaterials(suiteId: AlgorithmSuiteIdentifier) {
  const material = await cmm().getEncryptionMaterials({ suite: new NodeAlgorithmSuite(suiteId), encryptionContext: { purpose: 'native-test' }, commitmentPolicy: policyFor(suiteId) })
  const plain = {
    suite: material.suite,
    encryptionContext: { ...material.encryptionContext },
    dataKey: new Uint8Array(unwrapDataKey(material.getUnencryptedDataKey())),
    edks: material.encryptedDataKeys,
    signatureKey: material.signatureKey,
  }
  material.zeroUnencryptedDataKey()
  return plain
}

function freshMaterial(plain: Awaited<ReturnType<typeof plainMaterials>>): NodeEncryptionMaterial {
  const material = new NodeEncryptionMaterial(plain.suite, plain.encryptionContext).setUnencryptedDataKey(new Uint8Array(plain.dataKey), {
    keyNamespace: 'native-test',
    keyName: 'k',
    flags: KeyringTraceFlag.WRAPPING_KEY_GENERATED_DATA_KEY,
  })
  for (const edk of plain.edks) material.addEncryptedDataKey(new EncryptedDataKey(edk), KeyringTraceFlag.WRAPPING_KEY_ENCRYPTED_DATA_KEY)
  if (plain.signatureKey) material.setSignatureKey(new SignatureKey(plain.signatureKey.privateKey as unknown as Uint8Array, plain.signatureKey.compressPoint, plain.suite))
  return material
}

/** Encrypt with the kernel (native) or the JavaScript loop, same materials and message ID. */
async function encryptOn(path: 'native' | 'js', plain: Awaited<ReturnType<typeof plainMaterials>>, plaintext: Buffer, frameLength: number, messageId: Uint8Array, batchBytes?: number) {
  process.env.ENVCRYPT_NATIVE = path === 'js' ? '0' : '1'
  const sink = new Sink()
  const before = nativeStats.messages
  await encryptWithMaterials(freshMaterial(plain), pieces(plaintext, 65536), sink, { frameLength, messageId, batchBytes })
  expect(nativeStats.messages - before).toBe(path === 'native' ? 1 : 0)
  return sink.bytes
}

/** Header + body length: the signature footer differs between two runs (ECDSA is randomized). */
async function bodyEnd(message: Buffer, size: number, frameLength: number): Promise<number> {
  const { parsed } = await readHeader(pieces(message, message.length || 1)[Symbol.asyncIterator](), false)
  const full = Math.floor(size / frameLength)
  return parsed.headerLength + full * (4 + 12 + frameLength + 16) + 4 + 4 + 12 + 4 + (size - full * frameLength) + 16
}

async function decryptOn(path: 'native' | 'js', message: Buffer, options: { chunk?: number } = {}) {
  process.env.ENVCRYPT_NATIVE = path === 'js' ? '0' : '1'
  const sink = new Sink()
  const before = nativeStats.messages
  await jsEngine.decrypt(pieces(message, options.chunk ?? 65536), sink, { cmm: cmm(), commitmentPolicy: REQUIRE_ENCRYPT_ALLOW_DECRYPT })
  return { plaintext: sink.bytes, usedNative: nativeStats.messages > before }
}

describe(`native frame kernel${reason}`, () => {
  it.runIf(built)('derives the same per-message key as the SDK for every suite', async () => {
    for (const suiteId of allSuites) {
      const plain = await plainMaterials(suiteId)
      const material = freshMaterial(plain)
      const messageId = randomBytes(committing(suiteId) ? 32 : 16)
      const ours = deriveDataKey(material, messageId)
      // The SDK's cipher for an IV, against ours: same key gives the same ciphertext and tag.
      const { getCipher } = getEncryptHelper(material).getCipherInfo(messageId)
      const iv = Buffer.alloc(12, 7)
      const sdk = getCipher(iv)
      sdk.setAAD(Buffer.from('aad'))
      const expected = Buffer.concat([sdk.update(Buffer.from('probe')), sdk.final(), sdk.getAuthTag()])
      const { createCipheriv } = await import('node:crypto')
      const mine = createCipheriv(`aes-${ours.length * 8}-gcm`, ours, iv)
      mine.setAAD(Buffer.from('aad'))
      expect(Buffer.concat([mine.update(Buffer.from('probe')), mine.final(), mine.getAuthTag()])).toEqual(expected)
      expect(nativeKernel()!.gcmTag(ours, iv, Buffer.from('header'))).toEqual(
        (() => {
          const c = getCipher(iv)
          c.setAAD(Buffer.from('header'))
          c.update(Buffer.alloc(0))
          c.final()
          return c.getAuthTag()
        })(),
      )
    }
  })

  it.runIf(built)('writes byte-for-byte the JavaScript loop\'s message (every suite, frame edge sizes, multi-batch)', async () => {
    const cases: Array<[number, number, number?]> = [
      [0, 64], [1, 64], [63, 64], [64, 64], [65, 64], [64 * 5 + 3, 64, 128], [4096 * 3, 4096], [3 * 1024 * 1024 + 7, 4096], [2 * 1024 * 1024, 1024 * 1024],
    ]
    const client = buildClient(REQUIRE_ENCRYPT_ALLOW_DECRYPT)
    for (const suiteId of allSuites) {
      const plain = await plainMaterials(suiteId)
      for (const [size, frameLength, batchBytes] of cases) {
        if (size > 65536 && suiteId !== AlgorithmSuiteIdentifier.ALG_AES256_GCM_IV12_TAG16_HKDF_SHA512_COMMIT_KEY_ECDSA_P384) continue
        const plaintext = randomBytes(size)
        const messageId = randomBytes(committing(suiteId) ? 32 : 16)
        const viaNative = await encryptOn('native', plain, plaintext, frameLength, messageId, batchBytes)
        const viaJs = await encryptOn('js', plain, plaintext, frameLength, messageId, batchBytes)
        const end = await bodyEnd(viaJs, size, frameLength)
        expect(viaNative.subarray(0, end).equals(viaJs.subarray(0, end)), `suite ${suiteId} size ${size} frame ${frameLength}`).toBe(true)
        if (!plain.signatureKey) expect(viaNative.equals(viaJs)).toBe(true)
        const { plaintext: back } = await client.decrypt(cmm(), viaNative)
        expect(Buffer.from(back).equals(plaintext)).toBe(true)
        // And both decrypt paths read it.
        for (const path of ['native', 'js'] as const) {
          const result = await decryptOn(path, viaNative, { chunk: 7919 })
          expect(result.plaintext.equals(plaintext)).toBe(true)
          expect(result.usedNative).toBe(path === 'native')
        }
      }
    }
  }, 120_000)

  it.runIf(built)('property: random frame lengths, sizes and chunkings are identical on both paths', async () => {
    const plain = await plainMaterials(AlgorithmSuiteIdentifier.ALG_AES256_GCM_IV12_TAG16_HKDF_SHA512_COMMIT_KEY)
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 5000 }), fc.integer({ min: 0, max: 40_000 }), fc.integer({ min: 1, max: 20_000 }), async (frameLength, size, batchBytes) => {
        const plaintext = randomBytes(size)
        const messageId = randomBytes(32)
        const viaNative = await encryptOn('native', plain, plaintext, frameLength, messageId, batchBytes)
        const viaJs = await encryptOn('js', plain, plaintext, frameLength, messageId, batchBytes)
        expect(viaNative.equals(viaJs)).toBe(true)
        const { plaintext: back, usedNative } = await decryptOn('native', viaNative, { chunk: 1 + (batchBytes % 9000) })
        expect(usedNative).toBe(true)
        expect(back.equals(plaintext)).toBe(true)
      }),
      { numRuns: 60 },
    )
  })

  it.runIf(built)('native decrypt rejects a flipped bit in any ciphertext or tag byte, naming the frame, without ending the output', async () => {
    const plain = await plainMaterials(AlgorithmSuiteIdentifier.ALG_AES256_GCM_IV12_TAG16_HKDF_SHA512_COMMIT_KEY)
    const frameLength = 64
    const plaintext = randomBytes(200) // 3 regular frames and an 8-byte final frame
    const message = await encryptOn('native', plain, plaintext, frameLength, randomBytes(32))
    const { parsed } = await readHeader(pieces(message, message.length)[Symbol.asyncIterator](), false)
    const regular = 4 + 12 + frameLength + 16
    const ranges: Array<[number, number, number]> = []
    for (let frame = 0; frame < 3; frame++) {
      const start = parsed.headerLength + frame * regular + 4 + 12
      ranges.push([start, start + frameLength + 16, frame + 1])
    }
    const finalStart = parsed.headerLength + 3 * regular + 4 + 4 + 12 + 4
    ranges.push([finalStart, finalStart + 8 + 16, 4])
    for (const [start, end, sequenceNumber] of ranges) {
      for (let at = start; at < end; at++) {
        const flipped = Buffer.from(message)
        flipped[at] ^= 1 << at % 8
        process.env.ENVCRYPT_NATIVE = '1'
        const sink = new Sink()
        let ended = false
        sink.on('finish', () => (ended = true))
        const error = await jsEngine
          .decrypt(pieces(flipped, 100), sink, { cmm: cmm(), commitmentPolicy: REQUIRE_ENCRYPT_ALLOW_DECRYPT })
          .then(() => undefined, (err: unknown) => err)
        expect(error).toBeInstanceOf(IntegrityError)
        expect((error as Error).message).toBe(`frame ${sequenceNumber} failed authentication: the message was altered or the wrong key was used`)
        expect(ended).toBe(false)
      }
    }
  })

  it.runIf(built)('the kernel refuses out-of-range offsets and lengths instead of touching memory', () => {
    const kernel = nativeKernel()!
    const key = randomBytes(32)
    const prefix = Buffer.alloc(60)
    const plaintext = randomBytes(100)
    const exact = 2 * (4 + 12 + 50 + 16) + (4 + 4 + 12 + 4 + 0 + 16)
    expect(kernel.encryptFrames(key, plaintext, Buffer.alloc(exact), 0, prefix, prefix, 1, 50, true)).toBe(exact)
    expect(() => kernel.encryptFrames(key, plaintext, Buffer.alloc(exact - 1), 0, prefix, prefix, 1, 50, true)).toThrow(/too small/)
    expect(() => kernel.encryptFrames(key, plaintext, Buffer.alloc(exact), 1, prefix, prefix, 1, 50, true)).toThrow(/too small/)
    expect(() => kernel.encryptFrames(key, plaintext, Buffer.alloc(exact), exact + 1, prefix, prefix, 1, 50, true)).toThrow(/out of range/)
    expect(() => kernel.encryptFrames(key, plaintext.subarray(0, 99), Buffer.alloc(exact), 0, prefix, prefix, 1, 50, false)).toThrow(/partial frame/)
    expect(() => kernel.encryptFrames(key, plaintext, Buffer.alloc(exact), 0, prefix, prefix, 0xffffffff, 50, true)).toThrow(/2\^32-1/)
    expect(() => kernel.encryptFrames(key.subarray(0, 31), plaintext, Buffer.alloc(exact), 0, prefix, prefix, 1, 50, true)).toThrow(/key length/)
    expect(() => kernel.encryptFrames(key, plaintext, Buffer.alloc(exact), 0.5, prefix, prefix, 1, 50, true)).toThrow(/out of range/)

    const input = Buffer.alloc(100)
    const out = Buffer.alloc(100)
    const frames = (...values: number[]) => new Float64Array(values)
    expect(() => kernel.decryptFrames(key, input, frames(0, 12, 73, 1, 0), out, prefix, prefix)).toThrow(/out of range/) // tag past the end
    expect(() => kernel.decryptFrames(key, input, frames(95, 0, 10, 1, 0), out, prefix, prefix)).toThrow(/out of range/) // IV past the end
    expect(() => kernel.decryptFrames(key, input, frames(0, 12, 10, 1, 2), out, prefix, prefix)).toThrow(/out of range/)
    expect(() => kernel.decryptFrames(key, input, frames(0, 12, 10, 1), out, prefix, prefix)).toThrow(/5 numbers/)
    expect(() => kernel.decryptFrames(key, input, frames(0, 12, 60, 1, 0), Buffer.alloc(59), prefix, prefix)).toThrow(/too small/)
    expect(() => kernel.decryptFrames(key, input, new Float32Array(5) as unknown as Float64Array, out, prefix, prefix)).toThrow(/Float64Array/)
    // In range but not authentic: frame index 0 fails.
    expect(kernel.decryptFrames(key, input, frames(0, 12, 60, 1, 0), out, prefix, prefix)).toBe(0)
  })

  it.runIf(built)('openRegularFrames opens what encryptFrames sealed and stops, without judging, where a regular frame does not follow', () => {
    const kernel = nativeKernel()!
    const key = randomBytes(32)
    const framePrefix = randomBytes(40)
    const finalPrefix = randomBytes(41)
    const frameLength = 50
    const frameBytes = 4 + 12 + frameLength + 16
    const plaintext = randomBytes(3 * frameLength + 7) // 3 regular frames and a 7-byte final frame
    const sealed = Buffer.alloc(3 * frameBytes + (4 + 4 + 12 + 4 + 7 + 16))
    expect(kernel.encryptFrames(key, plaintext, sealed, 0, framePrefix, finalPrefix, 5, frameLength, true)).toBe(sealed.length)
    const input = Buffer.concat([randomBytes(3), sealed]) // an odd offset in front
    const out = Buffer.alloc(4 * frameLength)
    const open = (start: number, end: number, first: number, into = out, at = 0) =>
      kernel.openRegularFrames(key, input, start, end, first, frameLength, into, at, framePrefix)
    // All three regular frames, then it stops at the end marker.
    expect(open(3, input.length, 5)).toBe(3)
    expect(out.subarray(0, 3 * frameLength)).toEqual(plaintext.subarray(0, 3 * frameLength))
    // From the second frame, into an offset of `out`.
    out.fill(0)
    expect(open(3 + frameBytes, input.length, 6, out, 1)).toBe(2)
    expect(out.subarray(1, 1 + 2 * frameLength)).toEqual(plaintext.subarray(frameLength, 3 * frameLength))
    // A range ending one byte short of a frame's tag stops before that frame; no room in `out` likewise.
    expect(open(3, 3 + 2 * frameBytes - 1, 5)).toBe(1)
    expect(open(3, input.length, 5, Buffer.alloc(2 * frameLength + 3))).toBe(2)
    // Another sequence number than expected: nothing opened (the JavaScript parser names the problem).
    expect(open(3, input.length, 4)).toBe(0)
    expect(open(3, input.length, 6)).toBe(0)
    // A flipped tag bit in the second frame: -(index + 1).
    const tampered = Buffer.from(input)
    tampered[3 + 2 * frameBytes - 1] ^= 0x80
    expect(kernel.openRegularFrames(key, tampered, 3, tampered.length, 5, frameLength, out, 0, framePrefix)).toBe(-2)
    // Out-of-range arguments are refused before any memory is touched.
    expect(() => open(3, input.length + 1, 5)).toThrow(/out of range/)
    expect(() => open(10, 9, 5)).toThrow(/out of range/)
    expect(() => open(3, input.length, 0)).toThrow(/out of range/)
    expect(() => open(3, input.length, 5, out, out.length + 1)).toThrow(/out of range/)
    expect(() => kernel.openRegularFrames(key, input, 3, input.length, 5, 0, out, 0, framePrefix)).toThrow(/out of range/)
    expect(() => kernel.openRegularFrames(key.subarray(1), input, 3, input.length, 5, frameLength, out, 0, framePrefix)).toThrow(/key length/)
  })

  it.runIf(built)('a data key the kernel cannot reproduce falls back to JavaScript (same output)', async () => {
    // Decryption materials whose suite claims no KDF while the message was written with one: our derived key
    // then differs from the SDK's, the header tag check catches it, and the message runs on JavaScript.
    const plain = await plainMaterials(AlgorithmSuiteIdentifier.ALG_AES256_GCM_IV12_TAG16_HKDF_SHA512_COMMIT_KEY)
    const plaintext = randomBytes(10_000)
    const message = await encryptOn('native', plain, plaintext, 4096, randomBytes(32))
    const { parsed, buffered } = await readHeader(pieces(message, message.length)[Symbol.asyncIterator](), false)
    // The message decrypts on both counts: the SDK's tag check still guards every frame on the fallback.
    const material = new NodeDecryptionMaterial(plain.suite, plain.encryptionContext).setUnencryptedDataKey(new Uint8Array(plain.dataKey), {
      keyNamespace: 'native-test',
      keyName: 'k',
      flags: KeyringTraceFlag.WRAPPING_KEY_DECRYPTED_DATA_KEY,
    })
    // Sabotage only our derivation (the SDK derives its own key inside getDecipherInfo).
    const realDerive = keyDerivation.derive
    keyDerivation.derive = (m, id) => {
      const key = realDerive(m, id)
      key[0] ^= 1
      return key
    }
    onTestFinished(() => {
      keyDerivation.derive = realDerive
    })
    process.env.ENVCRYPT_NATIVE = '1'
    const before = { ...nativeStats }
    const sink = new Sink()
    await decryptWithMaterials(material, { parsed, headerBytes: buffered, rest: (async function* () {})()[Symbol.asyncIterator]() }, sink)
    expect(sink.bytes.equals(plaintext)).toBe(true)
    expect(nativeStats.fallbacks - before.fallbacks).toBe(1)
    expect(nativeStats.messages - before.messages).toBe(0)
  })
})

describe('native kernel switch', () => {
  it(`ENVCRYPT_NATIVE=0 turns it off${built ? '' : reason}`, () => {
    process.env.ENVCRYPT_NATIVE = '0'
    expect(nativeActive()).toBe(false)
    expect(nativeKernel()).toBeUndefined()
  })
})
