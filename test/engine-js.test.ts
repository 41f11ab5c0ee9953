// Differential tests of the js engine against the AWS Encryption SDK itself (and the Python CLI's vectors):
// every message the js engine writes must decrypt with the SDK, and every message the SDK writes must
// decrypt with the js engine; tampering and truncation must be rejected without ending the output.
import { describe, it, expect, beforeAll } from 'vitest'
import fc from 'fast-check'
import { Writable } from 'node:stream'
import { constants, generateKeyPairSync, randomBytes } from 'node:crypto'
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'
import {
  AlgorithmSuiteIdentifier,
  CommitmentPolicy,
  CommitmentPolicySuites,
  MultiKeyringNode,
  NodeCachingMaterialsManager,
  getLocalCryptographicMaterialsCache,
  NodeAlgorithmSuite,
  NodeDefaultCryptographicMaterialsManager,
  RawAesKeyringNode,
  RawAesWrappingSuiteIdentifier,
  RawRsaKeyringNode,
  buildClient,
  getEncryptHelper,
  type KeyringNode,
  type NodeMaterialsManager,
} from '@aws-crypto/client-node'
import { ContentAADString, ContentType, serializeFactory, serializeMessageHeaderAuth, serializeSignatureInfo } from '@aws-crypto/serialize'
import { jsEngine } from '../src/message/engine-js.js'
import { encryptWithMaterials } from '../src/message/encrypt.js'
import { decryptWithMaterials } from '../src/message/decrypt.js'
import { resolveEncryptionMaterials, resolveDecryptionMaterials, checkDecryptHeader } from '../src/message/resolve.js'
import { sdkEngine, readHeader, type ByteSource, type DecryptMessageOptions, type EncryptMessageOptions } from '../src/message/engine.js'
import { EnvcryptError, IntegrityError } from '../src/errors.js'

const VECTORS = new URL('../fixtures/vectors/python-cli', import.meta.url).pathname
const { REQUIRE_ENCRYPT_REQUIRE_DECRYPT, REQUIRE_ENCRYPT_ALLOW_DECRYPT, FORBID_ENCRYPT_ALLOW_DECRYPT } = CommitmentPolicy

// ---------- fixtures ----------

class Sink extends Writable {
  chunks: Buffer[] = []
  ended = false
  constructor() {
    super()
    this.on('finish', () => (this.ended = true))
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void) {
    this.chunks.push(Buffer.from(chunk))
    done()
  }
  get bytes(): Buffer {
    return Buffer.concat(this.chunks)
  }
}

/** Feed `data` in pieces whose sizes follow `sizes` (cycled), 1 byte minimum. */
async function* pieces(data: Buffer, sizes: number[] = [data.length || 1]): AsyncGenerator<Uint8Array> {
  let at = 0
  let i = 0
  while (at < data.length) {
    const size = Math.max(1, sizes[i++ % sizes.length])
    // Fresh copies, as a file stream would hand out.
    yield new Uint8Array(data.subarray(at, at + size))
    at += size
  }
}

const aesKey = readFileSync(join(VECTORS, 'key.bin'))
const aesKeyring = () =>
  new RawAesKeyringNode({
    keyName: 'key1',
    keyNamespace: 'envcrypt-test',
    unencryptedMasterKey: new Uint8Array(aesKey),
    wrappingSuite: RawAesWrappingSuiteIdentifier.AES256_GCM_IV12_TAG16_NO_PADDING,
  })
let rsaKeyringInstance: KeyringNode
const keyrings: Record<'aes' | 'rsa', () => KeyringNode> = {
  aes: aesKeyring,
  rsa: () => rsaKeyringInstance,
}
const cmmFor = (kind: 'aes' | 'rsa' = 'aes') => new NodeDefaultCryptographicMaterialsManager(keyrings[kind]())

beforeAll(() => {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  })
  rsaKeyringInstance = new RawRsaKeyringNode({
    keyName: 'rsa1',
    keyNamespace: 'envcrypt-test',
    rsaKey: { publicKey, privateKey },
    padding: constants.RSA_PKCS1_OAEP_PADDING,
    oaepHash: 'sha256',
  })
})

const allSuites = Object.values(AlgorithmSuiteIdentifier).filter((v): v is AlgorithmSuiteIdentifier => typeof v === 'number')
const committingSuites = allSuites.filter((id) => CommitmentPolicySuites[REQUIRE_ENCRYPT_REQUIRE_DECRYPT].encryptEnabledSuites[id])
const nonCommittingSuites = allSuites.filter((id) => !committingSuites.includes(id))
const policyForEncrypt = (suite: AlgorithmSuiteIdentifier) => (committingSuites.includes(suite) ? REQUIRE_ENCRYPT_REQUIRE_DECRYPT : FORBID_ENCRYPT_ALLOW_DECRYPT)
const isSigned = (suite: AlgorithmSuiteIdentifier) => !!new NodeAlgorithmSuite(suite).signatureCurve

async function jsEncrypt(plaintext: Buffer, options: Partial<EncryptMessageOptions> & { sizes?: number[] } = {}) {
  const sink = new Sink()
  const result = await jsEngine.encrypt(pieces(plaintext, options.sizes), sink, {
    cmm: cmmFor(),
    commitmentPolicy: REQUIRE_ENCRYPT_REQUIRE_DECRYPT,
    frameLength: 4096,
    encryptionContext: {},
    ...options,
  })
  expect(sink.ended).toBe(true)
  expect(result.bytesIn).toBe(plaintext.length)
  expect(result.bytesOut).toBe(sink.bytes.length)
  return { ciphertext: sink.bytes, result }
}

async function jsDecrypt(ciphertext: Buffer, options: Partial<DecryptMessageOptions> & { sizes?: number[] } = {}) {
  const sink = new Sink()
  const result = await jsEngine.decrypt(pieces(ciphertext, options.sizes), sink, {
    cmm: cmmFor(),
    commitmentPolicy: REQUIRE_ENCRYPT_ALLOW_DECRYPT,
    ...options,
  })
  expect(sink.ended).toBe(true)
  expect(result.bytesIn).toBe(ciphertext.length)
  expect(result.bytesOut).toBe(sink.bytes.length)
  return { plaintext: sink.bytes, result }
}

/** Decrypt expecting a refusal of class `expected` (IntegrityError unless a limit refuses it): a parser crash such
 *  as a TypeError must not pass for a refusal. The output must never be ended. Returns the error. */
async function expectRejectedDecrypt(
  ciphertext: Buffer,
  options: Partial<DecryptMessageOptions> & { sizes?: number[]; expected?: typeof EnvcryptError } = {},
): Promise<Error> {
  const sink = new Sink()
  let error: Error | undefined
  try {
    await jsEngine.decrypt(pieces(ciphertext, options.sizes), sink, { cmm: cmmFor(), commitmentPolicy: REQUIRE_ENCRYPT_ALLOW_DECRYPT, ...options })
  } catch (err) {
    error = err as Error
  }
  expect(error, 'decrypt should have been rejected').toBeInstanceOf(options.expected ?? IntegrityError)
  expect(sink.ended).toBe(false)
  expect(sink.writableEnded).toBe(false)
  expect(error!.message).not.toMatch(/\n/)
  return error!
}

/** Check the exact layout the SDK writes: header, floor(size / frame) regular frames, a final frame with
 *  the remainder (empty on exact multiples), then the signature footer for signed suites. */
async function expectSdkLayout(ciphertext: Buffer, size: number, frameLength: number) {
  const { parsed } = await readHeader(pieces(ciphertext)[Symbol.asyncIterator](), false)
  const bodyEnd = parsed.headerLength + expectedBodyLength(size, frameLength)
  const signed = isSigned(parsed.header.suiteId)
  expect(signed ? bodyEnd + 2 + ciphertext.readUInt16BE(bodyEnd) : bodyEnd).toBe(ciphertext.length)
  // The final frame's header: end marker, then sequence number floor(size / frame) + 1.
  const finalAt = parsed.headerLength + Math.floor(size / frameLength) * (4 + 12 + frameLength + 16)
  expect(ciphertext.readUInt32BE(finalAt)).toBe(0xffffffff)
  expect(ciphertext.readUInt32BE(finalAt + 4)).toBe(Math.floor(size / frameLength) + 1)
  expect(ciphertext.readUInt32BE(finalAt + 8 + 12)).toBe(size % frameLength)
}
/** Ciphertext body size for a framed message, as the SDK lays it out (regular frames + final frame). */
function expectedBodyLength(size: number, frame: number, ivLength = 12, tagLength = 16) {
  const full = Math.floor(size / frame)
  return full * (4 + ivLength + frame + tagLength) + (4 + 4 + ivLength + 4 + (size - full * frame) + tagLength)
}

// ---------- differential: js engine vs the SDK ----------

describe('jsEngine against the SDK', () => {
  it('writes what the SDK and sdkEngine read, and reads what the SDK writes, for every suite (frame edge sizes)', async () => {
    const frame = 64
    const sizes = [0, 1, frame - 1, frame, frame + 1, 3 * frame, 3 * frame + 5]
    for (const suite of allSuites) {
      const commitmentPolicy = policyForEncrypt(suite)
      const client = buildClient({ commitmentPolicy: REQUIRE_ENCRYPT_ALLOW_DECRYPT })
      for (const size of sizes) {
        const plaintext = randomBytes(size)
        const encryptionContext = { purpose: 'test', size: String(size) }
        const { ciphertext, result } = await jsEncrypt(plaintext, { suiteId: suite, commitmentPolicy, frameLength: frame, encryptionContext, sizes: [7, 1, 100] })
        expect(result.header.suiteId).toBe(suite)
        const viaSdk = await client.decrypt(cmmFor(), ciphertext)
        expect(Buffer.from(viaSdk.plaintext).equals(plaintext)).toBe(true)
        expect(viaSdk.messageHeader.encryptionContext).toMatchObject(encryptionContext)
        const sink = new Sink()
        await sdkEngine.decrypt(pieces(ciphertext), sink, { cmm: cmmFor(), commitmentPolicy: REQUIRE_ENCRYPT_ALLOW_DECRYPT })
        expect(sink.bytes.equals(plaintext)).toBe(true)

        // Same layout as the SDK: identical body size (the footer's DER signature length varies, so compare unsigned only).
        const sdkMessage = await buildClient({ commitmentPolicy }).encrypt(cmmFor(), plaintext, { suiteId: suite, frameLength: frame, encryptionContext })
        if (!isSigned(suite)) expect(ciphertext.length).toBe(sdkMessage.result.length)
        await expectSdkLayout(ciphertext, size, frame)
        await expectSdkLayout(sdkMessage.result, size, frame)
        const { plaintext: back } = await jsDecrypt(sdkMessage.result, { sizes: [3, 50] })
        expect(back.equals(plaintext)).toBe(true)
      }
    }
  })

  it('uses the policy default suite when none is requested', async () => {
    const { result } = await jsEncrypt(Buffer.from('x'), { commitmentPolicy: REQUIRE_ENCRYPT_REQUIRE_DECRYPT })
    expect(result.header.suiteId).toBe(AlgorithmSuiteIdentifier.ALG_AES256_GCM_IV12_TAG16_HKDF_SHA512_COMMIT_KEY_ECDSA_P384)
    const v1 = await jsEncrypt(Buffer.from('x'), { commitmentPolicy: FORBID_ENCRYPT_ALLOW_DECRYPT })
    expect(v1.result.header.suiteId).toBe(AlgorithmSuiteIdentifier.ALG_AES256_GCM_IV12_TAG16_HKDF_SHA384_ECDSA_P384)
    expect(v1.result.header.version).toBe(1)
  })

  it('refuses suites the commitment policy forbids, before calling the materials manager', async () => {
    let calls = 0
    const cmm = { getEncryptionMaterials: async () => (calls++, Promise.reject(new Error('called'))) } as unknown as NodeMaterialsManager
    await expect(
      jsEngine.encrypt(pieces(Buffer.from('x')), new Sink(), {
        cmm,
        commitmentPolicy: REQUIRE_ENCRYPT_REQUIRE_DECRYPT,
        suiteId: AlgorithmSuiteIdentifier.ALG_AES256_GCM_IV12_TAG16_HKDF_SHA256,
        frameLength: 4096,
        encryptionContext: {},
      }),
    ).rejects.toThrow(/not allowed for encryption/)
    await expect(
      jsEngine.encrypt(pieces(Buffer.from('x')), new Sink(), { cmm, commitmentPolicy: REQUIRE_ENCRYPT_REQUIRE_DECRYPT, frameLength: 0, encryptionContext: {} }),
    ).rejects.toThrow(/frame length/)
    expect(calls).toBe(0)
  })

  it('property: random suites, frame lengths, sizes, contexts, keyrings and input chunking round-trip both ways', async () => {
    const frameLengths = fc.oneof(fc.constantFrom(1, 2, 3, 17, 4095, 4096, 4097, 65536, 1 << 20), fc.integer({ min: 1, max: 70_000 }))
    const scenario = fc
      .record({
        suite: fc.constantFrom(...allSuites),
        frameLength: frameLengths,
        frames: fc.integer({ min: 0, max: 4 }),
        delta: fc.constantFrom(-1, 0, 1, 0.5),
        keyring: fc.constantFrom<'aes' | 'rsa'>('aes', 'aes', 'rsa'),
        context: fc.dictionary(fc.string({ minLength: 1, maxLength: 8, unit: 'grapheme' }), fc.string({ maxLength: 12, unit: 'grapheme' }), { maxKeys: 3 }),
        chunkSizes: fc.array(fc.integer({ min: 1, max: 300_000 }), { minLength: 1, maxLength: 5 }),
      })
      .map((s) => {
        // Keep tiny frames to few bytes: a frame costs ~10 us in the SDK too.
        const frames = s.frameLength < 64 ? Math.min(s.frames, 2) * 50 : s.frames
        const size = Math.max(0, Math.floor(frames * s.frameLength + (s.delta === 0.5 ? s.frameLength / 2 : s.delta)))
        const context = Object.fromEntries(Object.entries(s.context).filter(([k]) => !k.startsWith('aws-crypto')))
        return { ...s, size, context }
      })
    await fc.assert(
      fc.asyncProperty(scenario, async ({ suite, frameLength, size, keyring, context, chunkSizes }) => {
        const plaintext = randomBytes(size)
        const commitmentPolicy = policyForEncrypt(suite)
        const client = buildClient({ commitmentPolicy: REQUIRE_ENCRYPT_ALLOW_DECRYPT })
        const { ciphertext } = await jsEncrypt(plaintext, { suiteId: suite, commitmentPolicy, frameLength, encryptionContext: context, cmm: cmmFor(keyring), sizes: chunkSizes })
        await expectSdkLayout(ciphertext, size, frameLength)
        const viaSdk = await client.decrypt(cmmFor(keyring), ciphertext)
        expect(Buffer.from(viaSdk.plaintext).equals(plaintext)).toBe(true)
        const sdkMessage = await buildClient({ commitmentPolicy }).encrypt(cmmFor(keyring), plaintext, { suiteId: suite, frameLength, encryptionContext: context })
        const { plaintext: back, result } = await jsDecrypt(sdkMessage.result, { cmm: cmmFor(keyring), sizes: chunkSizes })
        expect(back.equals(plaintext)).toBe(true)
        expect(result.header.encryptionContext).toMatchObject(context)
      }),
      { numRuns: 100 },
    )
  })

  it('property: the split frame loop with odd batch sizes matches the SDK', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...allSuites),
        fc.integer({ min: 1, max: 2000 }),
        fc.integer({ min: 0, max: 20_000 }),
        fc.integer({ min: 1, max: 10_000 }),
        fc.array(fc.integer({ min: 1, max: 9000 }), { minLength: 1, maxLength: 4 }),
        async (suite, frameLength, size, batchBytes, chunkSizes) => {
          const plaintext = randomBytes(size)
          const commitmentPolicy = policyForEncrypt(suite)
          const options: EncryptMessageOptions = { cmm: cmmFor(), commitmentPolicy, suiteId: suite, frameLength, encryptionContext: { a: 'b' } }
          const material = await resolveEncryptionMaterials(options)
          const sink = new Sink()
          await encryptWithMaterials(material, pieces(plaintext, chunkSizes), sink, { frameLength, batchBytes })
          await expectSdkLayout(sink.bytes, size, frameLength)
          const viaSdk = await buildClient({ commitmentPolicy: REQUIRE_ENCRYPT_ALLOW_DECRYPT }).decrypt(cmmFor(), sink.bytes)
          expect(Buffer.from(viaSdk.plaintext).equals(plaintext)).toBe(true)

          const iterator = pieces(sink.bytes, chunkSizes)[Symbol.asyncIterator]()
          const { parsed, buffered } = await readHeader(iterator, false)
          checkDecryptHeader(parsed, { commitmentPolicy: REQUIRE_ENCRYPT_ALLOW_DECRYPT })
          const decryptionMaterial = await resolveDecryptionMaterials(parsed, { cmm: cmmFor(), commitmentPolicy: REQUIRE_ENCRYPT_ALLOW_DECRYPT })
          const out = new Sink()
          await decryptWithMaterials(decryptionMaterial, { parsed, headerBytes: buffered, rest: iterator }, out, { batchBytes })
          expect(out.bytes.equals(plaintext)).toBe(true)
          expect(out.ended).toBe(true)
        },
      ),
      { numRuns: 150 },
    )
  })

  it('handles multi-batch messages (3 MiB + 7 in 4 KiB frames) and 1 MiB frames', async () => {
    const plaintext = randomBytes(3 * 1024 * 1024 + 7)
    for (const frameLength of [4096, 1 << 20]) {
      const { ciphertext } = await jsEncrypt(plaintext, { frameLength, suiteId: AlgorithmSuiteIdentifier.ALG_AES256_GCM_IV12_TAG16_HKDF_SHA512_COMMIT_KEY, sizes: [65536, 333_333] })
      await expectSdkLayout(ciphertext, plaintext.length, frameLength)
      const viaSdk = await buildClient(REQUIRE_ENCRYPT_REQUIRE_DECRYPT).decrypt(cmmFor(), ciphertext)
      expect(Buffer.from(viaSdk.plaintext).equals(plaintext)).toBe(true)
      const { plaintext: back } = await jsDecrypt(ciphertext, { sizes: [65536, 1, 777_777] })
      expect(back.equals(plaintext)).toBe(true)
    }
  })

  it('decrypts non-framed messages (content type 1), signed and unsigned, as the SDK does', async () => {
    for (const suite of [AlgorithmSuiteIdentifier.ALG_AES256_GCM_IV12_TAG16_HKDF_SHA512_COMMIT_KEY_ECDSA_P384, AlgorithmSuiteIdentifier.ALG_AES128_GCM_IV12_TAG16]) {
      for (const size of [0, 1, 5000]) {
        const plaintext = randomBytes(size)
        const message = await nonFramedMessage(plaintext, suite)
        const viaSdk = await buildClient(REQUIRE_ENCRYPT_ALLOW_DECRYPT).decrypt(cmmFor(), message)
        expect(Buffer.from(viaSdk.plaintext).equals(plaintext)).toBe(true)
        const { plaintext: back, result } = await jsDecrypt(message, { sizes: [10, 1000] })
        expect(result.header.contentType).toBe(ContentType.NO_FRAMING)
        expect(back.equals(plaintext)).toBe(true)
        if (size > 100) {
          const error = await expectRejectedDecrypt(message, { maxBodySize: 100, expected: EnvcryptError })
          expect(error.message).toMatch(/maximum body size/)
          const flipped = Buffer.from(message)
          flipped[message.length - (isSigned(suite) ? 120 : 20)] ^= 1
          await expectRejectedDecrypt(flipped)
        }
      }
    }
  })
})

describe('non-framed messages into a sink that keeps nothing (verify)', () => {
  it('outputKeepsNothing: the plaintext reaches the sink while the body is still read, not whole at the end; a tampered tag still fails', async () => {
    const plaintext = randomBytes(3 * 1024 * 1024)
    const message = await nonFramedMessage(plaintext, AlgorithmSuiteIdentifier.ALG_AES256_GCM_IV12_TAG16_HKDF_SHA512_COMMIT_KEY_ECDSA_P384)
    const firstWriteAt = async (outputKeepsNothing: boolean, input: Buffer) => {
      let read = 0
      let atFirstWrite: number | undefined
      const source = (async function* () {
        for (let at = 0; at < input.length; at += 64 * 1024) {
          read = Math.min(input.length, at + 64 * 1024)
          yield input.subarray(at, read)
        }
      })()
      const sink = new Writable({
        write(_chunk, _encoding, done) {
          atFirstWrite ??= read
          done()
        },
      })
      await jsEngine.decrypt(source, sink, { cmm: cmmFor(), commitmentPolicy: REQUIRE_ENCRYPT_ALLOW_DECRYPT, outputKeepsNothing })
      return atFirstWrite
    }
    expect(await firstWriteAt(false, message)).toBe(message.length)
    expect(await firstWriteAt(true, message)).toBeLessThan(plaintext.length / 2)
    const flipped = Buffer.from(message)
    flipped[message.length - 120] ^= 1
    await expect(firstWriteAt(true, flipped)).rejects.toThrow(IntegrityError)
  })
})

/** A non-framed message built from the SDK's own pieces (the SDK only reads these; it cannot write them). */
async function nonFramedMessage(plaintext: Buffer, suiteId: AlgorithmSuiteIdentifier): Promise<Buffer> {
  const { serializeMessageHeader, headerAuthIv, frameIv } = serializeFactory((s: string) => Buffer.from(s, 'utf8'), { utf8Sorting: true })
  const commitmentPolicy = policyForEncrypt(suiteId)
  const material = await cmmFor().getEncryptionMaterials({ suite: new NodeAlgorithmSuite(suiteId), encryptionContext: { kind: 'non-framed' }, commitmentPolicy })
  const { getCipherInfo, getSigner } = getEncryptHelper(material)
  const v1 = material.suite.messageFormat === 1
  const messageId = randomBytes(v1 ? 16 : 32)
  const { getCipher, keyCommitment } = getCipherInfo(messageId)
  const common = { suiteId, messageId, encryptionContext: material.encryptionContext, encryptedDataKeys: material.encryptedDataKeys, contentType: ContentType.NO_FRAMING, frameLength: 0 }
  const header = v1 ? { version: 1, type: 128, headerIvLength: 12, ...common } : { version: 2, suiteData: keyCommitment, ...common }
  const rawHeader = Buffer.from(serializeMessageHeader(header as any))
  const headerIv = headerAuthIv(12)
  const auth = getCipher(headerIv)
  auth.setAAD(rawHeader)
  auth.update(Buffer.alloc(0))
  auth.final()
  const headerAuth = Buffer.from(serializeMessageHeaderAuth({ headerIv, headerAuthTag: auth.getAuthTag(), messageHeader: header as any }))
  const iv = Buffer.from(frameIv(12, 1))
  const length = Buffer.alloc(8)
  length.writeUInt32BE(plaintext.length, 4)
  const cipher = getCipher(iv)
  cipher.setAAD(Buffer.concat([messageId, Buffer.from(ContentAADString.NON_FRAMED_STRING_ID), Buffer.from([0, 0, 0, 1]), length]))
  const body = Buffer.concat([iv, length, cipher.update(plaintext), cipher.final(), cipher.getAuthTag()])
  const message = Buffer.concat([rawHeader, headerAuth, body])
  if (!getSigner) return message
  const signer = getSigner()
  signer.update(message)
  return Buffer.concat([message, Buffer.from(serializeSignatureInfo(signer.awsCryptoSign()))])
}

// ---------- the official CLI's vectors ----------

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name)
    return statSync(path).isDirectory() ? filesUnder(path) : [path]
  })
}

describe('Python aws-encryption-cli vectors', () => {
  const cases: Array<[string, CommitmentPolicy]> = [
    ['ciphertext-default', REQUIRE_ENCRYPT_REQUIRE_DECRYPT],
    ['ciphertext-unsigned', REQUIRE_ENCRYPT_REQUIRE_DECRYPT],
    ['ciphertext-v1-noncommitting', REQUIRE_ENCRYPT_ALLOW_DECRYPT],
  ]
  for (const [folder, commitmentPolicy] of cases) {
    it(`decrypts ${folder} to the original plaintext`, async () => {
      const files = filesUnder(join(VECTORS, folder))
      expect(files.length).toBeGreaterThan(5)
      for (const file of files) {
        const expected = readFileSync(join(VECTORS, 'plaintext', relative(join(VECTORS, folder), file)))
        const { plaintext, result } = await jsDecrypt(readFileSync(file), { commitmentPolicy, sizes: [4000, 123] })
        expect(plaintext.equals(expected), file).toBe(true)
        expect(result.headerAuth?.tag.length).toBe(16)
      }
    })
  }

  it('refuses v1 under require-encrypt-require-decrypt, before unwrapping any key', async () => {
    let calls = 0
    const cmm = { decryptMaterials: async () => (calls++, Promise.reject(new Error('called'))) } as unknown as NodeMaterialsManager
    const error = await expectRejectedDecrypt(readFileSync(join(VECTORS, 'ciphertext-v1-noncommitting/one-byte.bin')), { cmm, commitmentPolicy: REQUIRE_ENCRYPT_REQUIRE_DECRYPT })
    expect(error).toBeInstanceOf(IntegrityError)
    expect(error.message).toMatch(/commitment policy require-encrypt-require-decrypt/)
    expect(calls).toBe(0)
  })

  it('forbid-signed refuses signed messages and accepts unsigned ones', async () => {
    const error = await expectRejectedDecrypt(readFileSync(join(VECTORS, 'ciphertext-default/one-byte.bin')), { signaturePolicy: 'forbid-signed' })
    expect(error).toBeInstanceOf(IntegrityError)
    expect(error.message).toMatch(/signed/)
    const { plaintext } = await jsDecrypt(readFileSync(join(VECTORS, 'ciphertext-unsigned/one-byte.bin')), { signaturePolicy: 'forbid-signed' })
    expect(plaintext).toEqual(readFileSync(join(VECTORS, 'plaintext/one-byte.bin')))
  })
})

// ---------- refusals, tampering, truncation ----------

describe('jsEngine refusals', () => {
  const signedSuite = AlgorithmSuiteIdentifier.ALG_AES256_GCM_IV12_TAG16_HKDF_SHA512_COMMIT_KEY_ECDSA_P384
  const unsignedSuite = AlgorithmSuiteIdentifier.ALG_AES256_GCM_IV12_TAG16_HKDF_SHA512_COMMIT_KEY
  const v1Suite = AlgorithmSuiteIdentifier.ALG_AES128_GCM_IV12_TAG16_HKDF_SHA256_ECDSA_P256
  let messages: Array<{ suite: AlgorithmSuiteIdentifier; ciphertext: Buffer }> = []
  beforeAll(async () => {
    // 200 bytes in 64-byte frames: 3 regular frames and an 8-byte final frame.
    const plaintext = randomBytes(200)
    messages = []
    for (const suite of [signedSuite, unsignedSuite, v1Suite]) {
      const { ciphertext } = await jsEncrypt(plaintext, { suiteId: suite, commitmentPolicy: policyForEncrypt(suite), frameLength: 64, encryptionContext: { a: 'b' } })
      messages.push({ suite, ciphertext })
    }
  })

  it('rejects a bit flip anywhere (header, header auth, frames, tags, signature footer)', async () => {
    for (const { ciphertext } of messages) {
      // Every byte for the header region and a stride over the rest keeps this fast.
      for (let at = 0; at < ciphertext.length; at += at < 200 ? 1 : 3) {
        const flipped = Buffer.from(ciphertext)
        flipped[at] ^= 1 << at % 8
        await expectRejectedDecrypt(flipped, { sizes: [17] })
      }
    }
  })

  it('names the cause: frame tag, header auth, signature, commitment', async () => {
    const { ciphertext } = messages[0]
    const last = Buffer.from(ciphertext)
    last[last.length - 10] ^= 1
    expect((await expectRejectedDecrypt(last)).message).toMatch(/signature/)
    const lastFrame = Buffer.from(ciphertext)
    lastFrame[ciphertext.length - 104 - 2 - 20] ^= 1
    const frameError = await expectRejectedDecrypt(lastFrame)
    expect(frameError).toBeInstanceOf(IntegrityError)
    expect(frameError.message).toMatch(/frame 4 failed authentication|signature/)
    const { ciphertext: unsigned } = messages[1]
    const body = Buffer.from(unsigned)
    body[unsigned.length - 30] ^= 1
    expect((await expectRejectedDecrypt(body)).message).toMatch(/frame 4 failed authentication/)
    const { ciphertext: v1 } = messages[2]
    const { parsed } = await readHeader(pieces(v1)[Symbol.asyncIterator](), false)
    const headerTag = Buffer.from(v1)
    headerTag[parsed.headerLength - 1] ^= 1
    expect((await expectRejectedDecrypt(headerTag)).message).toMatch(/header authentication failed/)
    const { parsed: v2parsed } = await readHeader(pieces(unsigned)[Symbol.asyncIterator](), false)
    const commitment = Buffer.from(unsigned)
    commitment[v2parsed.headerLength - 16 - 1] ^= 1 // last byte of the suite data (key commitment)
    const commitError = await expectRejectedDecrypt(commitment)
    expect(commitError).toBeInstanceOf(IntegrityError)
    expect(commitError.message).toMatch(/commitment/)
  })

  it('rejects every truncation and trailing data', async () => {
    for (const { ciphertext } of messages) {
      for (let length = 0; length < ciphertext.length; length += length < 300 ? 7 : 1) {
        await expectRejectedDecrypt(ciphertext.subarray(0, length), { sizes: [50] })
      }
      await expectRejectedDecrypt(Buffer.concat([ciphertext, Buffer.from([0])]))
    }
  })

  it('onHeader throwing stops before the materials manager is called', async () => {
    let calls = 0
    const cmm = { decryptMaterials: async () => (calls++, Promise.reject(new Error('called'))) } as unknown as NodeMaterialsManager
    let seen: Record<string, string> | undefined
    const error = await expectRejectedDecrypt(messages[0].ciphertext, {
      cmm,
      onHeader: (parsed) => {
        seen = parsed.header.encryptionContext
        throw new IntegrityError('encryption context mismatch')
      },
    })
    expect(error.message).toBe('encryption context mismatch')
    expect(seen).toMatchObject({ a: 'b' })
    expect(calls).toBe(0)
  })

  it('maxBodySize refuses a larger frame length before unwrapping; maxEncryptedDataKeys is enforced both ways', async () => {
    let calls = 0
    const cmm = { decryptMaterials: async () => (calls++, Promise.reject(new Error('called'))) } as unknown as NodeMaterialsManager
    const error = await expectRejectedDecrypt(messages[0].ciphertext, { cmm, maxBodySize: 63, expected: EnvcryptError })
    expect(error.message).toMatch(/frame length 64 exceeds/)
    expect(calls).toBe(0)
    await jsDecrypt(messages[0].ciphertext, { maxBodySize: 64 })

    const twoKeys = () => new NodeDefaultCryptographicMaterialsManager(new MultiKeyringNode({ generator: aesKeyring(), children: [rsaKeyringInstance] }))
    await expect(
      jsEngine.encrypt(pieces(Buffer.from('x')), new Sink(), { cmm: twoKeys(), commitmentPolicy: REQUIRE_ENCRYPT_REQUIRE_DECRYPT, frameLength: 4096, encryptionContext: {}, maxEncryptedDataKeys: 1 }),
    ).rejects.toThrow(/maxEncryptedDataKeys/)
    const { ciphertext } = await jsEncrypt(Buffer.from('x'), { cmm: twoKeys() })
    await expectRejectedDecrypt(ciphertext, { maxEncryptedDataKeys: 1 })
    const { plaintext } = await jsDecrypt(ciphertext, { maxEncryptedDataKeys: 2 })
    expect(plaintext.toString()).toBe('x')
  })

  it('plaintextLength: works with the caching materials manager, refuses more plaintext than declared', async () => {
    const caching = new NodeCachingMaterialsManager({ backingMaterials: cmmFor(), cache: getLocalCryptographicMaterialsCache(10), maxAge: 60_000, maxMessagesEncrypted: 10 })
    const plaintext = randomBytes(700_000)
    const headers = []
    for (let i = 0; i < 2; i++) {
      const { ciphertext, result } = await jsEncrypt(plaintext, { cmm: caching, plaintextLength: plaintext.length, sizes: [65536, 5000] })
      headers.push(result.header)
      const viaSdk = await buildClient(REQUIRE_ENCRYPT_REQUIRE_DECRYPT).decrypt(cmmFor(), ciphertext)
      expect(Buffer.from(viaSdk.plaintext).equals(plaintext)).toBe(true)
    }
    // Same cached data key: same encrypted data key in both headers.
    expect(Buffer.from(headers[0].encryptedDataKeys[0].encryptedDataKey)).toEqual(Buffer.from(headers[1].encryptedDataKeys[0].encryptedDataKey))
    const sink = new Sink()
    await expect(
      jsEngine.encrypt(pieces(plaintext), sink, { cmm: cmmFor(), commitmentPolicy: REQUIRE_ENCRYPT_REQUIRE_DECRYPT, frameLength: 4096, encryptionContext: {}, plaintextLength: 1000 }),
    ).rejects.toThrow(/declared length/)
    expect(sink.writableEnded).toBe(false)
  })

  it('a wrong key is refused without ending the output', async () => {
    const other = new NodeDefaultCryptographicMaterialsManager(
      new RawAesKeyringNode({ keyName: 'key1', keyNamespace: 'envcrypt-test', unencryptedMasterKey: randomBytes(32), wrappingSuite: RawAesWrappingSuiteIdentifier.AES256_GCM_IV12_TAG16_NO_PADDING }),
    )
    await expectRejectedDecrypt(messages[0].ciphertext, { cmm: other })
  })
})
