// The local-file path of the frame loops (what the pool's workers run): reads into, seals or opens into, and
// writes from buffers reused message after message. Against the stream path, on the native kernel and on the
// JavaScript loop: byte for byte the same message for the same materials and message ID, at odd batch sizes
// and sizes around frame and batch edges; it reads what either path wrote, and refuses altered or truncated
// messages with the stream path's errors, leaving nothing written past the last authenticated batch.
import { afterEach, describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { randomBytes } from 'node:crypto'
import {
  AlgorithmSuiteIdentifier,
  CommitmentPolicy,
  EncryptedDataKey,
  KeyringTraceFlag,
  NodeAlgorithmSuite,
  NodeDefaultCryptographicMaterialsManager,
  NodeEncryptionMaterial,
  RawAesKeyringNode,
  RawAesWrappingSuiteIdentifier,
  buildClient,
  unwrapDataKey,
} from '@aws-crypto/client-node'
import { SignatureKey } from '@aws-crypto/material-management'
import { decryptWithMaterials } from '../src/message/decrypt.js'
import { encryptWithMaterials } from '../src/message/encrypt.js'
import { resolveDecryptionMaterials } from '../src/message/resolve.js'
import { readHeader } from '../src/message/engine.js'
import { FileChunkReader, FileInput, FileOutput, FrameBuffers } from '../src/message/file-io.js'
import { nativeActive, nativeStats } from '../src/message/native.js'
import { tempDir } from './helpers/cli.js'

const { REQUIRE_ENCRYPT_REQUIRE_DECRYPT, REQUIRE_ENCRYPT_ALLOW_DECRYPT } = CommitmentPolicy
const SIGNED = AlgorithmSuiteIdentifier.ALG_AES256_GCM_IV12_TAG16_HKDF_SHA512_COMMIT_KEY_ECDSA_P384
const UNSIGNED_V1 = AlgorithmSuiteIdentifier.ALG_AES128_GCM_IV12_TAG16_HKDF_SHA256
const envBefore = process.env.ENVCRYPT_NATIVE
afterEach(() => {
  if (envBefore === undefined) delete process.env.ENVCRYPT_NATIVE
  else process.env.ENVCRYPT_NATIVE = envBefore
})
const built = nativeActive()
const paths = built ? (['native', 'js'] as const) : (['js'] as const)
const usePath = (path: 'native' | 'js') => (process.env.ENVCRYPT_NATIVE = path === 'js' ? '0' : '1')

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
    new RawAesKeyringNode({ keyName: 'k', keyNamespace: 'file-io-test', unencryptedMasterKey: new Uint8Array(wrappingKey), wrappingSuite: RawAesWrappingSuiteIdentifier.AES256_GCM_IV12_TAG16_NO_PADDING }),
  )

/** One set of materials as plain data, so two encryptions can use the same data key and signing key. */
async function plainMaterials(suiteId: AlgorithmSuiteIdentifier) {
  const policy = suiteId === SIGNED ? REQUIRE_ENCRYPT_REQUIRE_DECRYPT : CommitmentPolicy.FORBID_ENCRYPT_ALLOW_DECRYPT
  const material = await cmm().getEncryptionMaterials({ suite: new NodeAlgorithmSuite(suiteId), encryptionContext: { purpose: 'file-io' }, commitmentPolicy: policy })
  const plain = { suite: material.suite, encryptionContext: { ...material.encryptionContext }, dataKey: new Uint8Array(unwrapDataKey(material.getUnencryptedDataKey())), edks: material.encryptedDataKeys, signatureKey: material.signatureKey }
  material.zeroUnencryptedDataKey()
  return plain
}
type Plain = Awaited<ReturnType<typeof plainMaterials>>

function freshMaterial(plain: Plain): NodeEncryptionMaterial {
  const material = new NodeEncryptionMaterial(plain.suite, plain.encryptionContext).setUnencryptedDataKey(new Uint8Array(plain.dataKey), {
    keyNamespace: 'file-io-test',
    keyName: 'k',
    flags: KeyringTraceFlag.WRAPPING_KEY_GENERATED_DATA_KEY,
  })
  for (const edk of plain.edks) material.addEncryptedDataKey(new EncryptedDataKey(edk), KeyringTraceFlag.WRAPPING_KEY_ENCRYPTED_DATA_KEY)
  if (plain.signatureKey) material.setSignatureKey(new SignatureKey(plain.signatureKey.privateKey as unknown as Uint8Array, plain.signatureKey.compressPoint, plain.suite))
  return material
}

const noStop = () => undefined

/** Encrypt the file at `input` into `output` through reused buffers. */
async function encryptFile(plain: Plain, input: string, output: string, options: { frameLength: number; batchBytes: number; messageId: Uint8Array; plaintextLength?: number }, buffers = new FrameBuffers()) {
  const inFd = openSync(input, 'r')
  const outFd = openSync(output, 'w')
  try {
    const sink = new FileOutput(outFd, buffers)
    const result = await encryptWithMaterials(freshMaterial(plain), new FileInput(inFd, buffers, noStop), sink, options)
    return { result, header: sink.firstChunk }
  } finally {
    closeSync(inFd)
    closeSync(outFd)
  }
}

/** Decrypt the message file at `input` into `output` through reused buffers, `batchBytes` read at a time. */
async function decryptFile(input: string, output: string, batchBytes: number, buffers = new FrameBuffers()) {
  const inFd = openSync(input, 'r')
  const outFd = openSync(output, 'w')
  try {
    // The header from a first small read, as the worker does; the rest from the descriptor.
    const first = Buffer.alloc(Math.min(64, readFileSync(input).length))
    const read = (await import('node:fs')).readSync(inFd, first, 0, first.length, null)
    const { parsed, buffered } = await readHeader(
      (async function* () {
        yield first.subarray(0, read)
        for (;;) {
          const more = Buffer.alloc(97)
          const n = (await import('node:fs')).readSync(inFd, more, 0, more.length, null)
          if (n === 0) return
          yield more.subarray(0, n)
        }
      })()[Symbol.asyncIterator](),
      false,
    )
    const material = await resolveDecryptionMaterials(parsed, { cmm: cmm(), commitmentPolicy: REQUIRE_ENCRYPT_ALLOW_DECRYPT })
    return await decryptWithMaterials(material, { parsed, headerBytes: buffered, rest: new FileInput(inFd, buffers, noStop) }, new FileOutput(outFd, buffers), { batchBytes })
  } finally {
    closeSync(inFd)
    closeSync(outFd)
  }
}

/** The stream path's message for the same materials and message ID. */
async function encryptStream(plain: Plain, plaintext: Buffer, frameLength: number, messageId: Uint8Array) {
  const sink = new Sink()
  await encryptWithMaterials(freshMaterial(plain), pieces(plaintext, 7919), sink, { frameLength, messageId })
  return sink.bytes
}

/** Header + body length: the signature footer differs between two runs (ECDSA is randomized). */
async function bodyEnd(message: Buffer, size: number, frameLength: number): Promise<number> {
  const { parsed } = await readHeader(pieces(message, message.length || 1)[Symbol.asyncIterator](), false)
  const full = Math.floor(size / frameLength)
  return parsed.headerLength + full * (4 + 12 + frameLength + 16) + 4 + 4 + 12 + 4 + (size - full * frameLength) + 16
}

describe(`local files through reused buffers (${paths.join(' and ')})`, () => {
  const client = buildClient(REQUIRE_ENCRYPT_ALLOW_DECRYPT)

  it('writes byte for byte the stream path\'s message at frame and batch edges, and reads it back', async () => {
    const dir = tempDir()
    const frameLength = 64
    // Batches of 3 frames (192 bytes), of 1 frame, and a batch size that is not a multiple of the frame length.
    const batches = [192, 64, 100, 1]
    const sizes = [0, 1, 63, 64, 65, 191, 192, 193, 384, 385, 1000]
    for (const suiteId of [SIGNED, UNSIGNED_V1]) {
      const plain = await plainMaterials(suiteId)
      for (const path of paths) {
        // One set of buffers for every message of the path, as a worker thread keeps them.
        const buffers = new FrameBuffers()
        for (const batchBytes of batches) {
          for (const size of sizes) {
            usePath(path)
            const plaintext = randomBytes(size)
            const messageId = randomBytes(suiteId === SIGNED ? 32 : 16)
            writeFileSync(join(dir, 'in'), plaintext)
            const before = nativeStats.messages
            const { result, header } = await encryptFile(plain, join(dir, 'in'), join(dir, 'enc'), { frameLength, batchBytes, messageId }, buffers)
            expect(nativeStats.messages - before).toBe(path === 'native' ? 1 : 0)
            const viaFile = readFileSync(join(dir, 'enc'))
            const viaStream = await encryptStream(plain, plaintext, frameLength, messageId)
            const label = `suite ${suiteId} ${path} batch ${batchBytes} size ${size}`
            const end = await bodyEnd(viaStream, size, frameLength)
            expect(viaFile.subarray(0, end).equals(viaStream.subarray(0, end)), label).toBe(true)
            if (suiteId !== SIGNED) expect(viaFile.equals(viaStream), label).toBe(true)
            expect(result.bytesIn).toBe(size)
            expect(result.bytesOut).toBe(viaFile.length)
            expect(Buffer.from(header!).equals(viaFile.subarray(0, header!.length))).toBe(true)
            const { plaintext: back } = await client.decrypt(cmm(), viaFile)
            expect(Buffer.from(back).equals(plaintext), label).toBe(true)
            const decrypted = await decryptFile(join(dir, 'enc'), join(dir, 'dec'), batchBytes + 37, buffers)
            expect(readFileSync(join(dir, 'dec')).equals(plaintext), label).toBe(true)
            expect(decrypted.bytesOut).toBe(size)
            expect(decrypted.bytesIn).toBe(viaFile.length)
          }
        }
      }
    }
  }, 120_000)

  it('property: random frame lengths, sizes and read sizes round-trip, and the SDK reads what the file path wrote', async () => {
    const dir = tempDir()
    const plain = await plainMaterials(SIGNED)
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...paths), fc.integer({ min: 1, max: 3000 }), fc.integer({ min: 0, max: 30_000 }), fc.integer({ min: 1, max: 9000 }), async (path, frameLength, size, batchBytes) => {
        usePath(path)
        const plaintext = randomBytes(size)
        writeFileSync(join(dir, 'in'), plaintext)
        await encryptFile(plain, join(dir, 'in'), join(dir, 'enc'), { frameLength, batchBytes, messageId: randomBytes(32) })
        const { plaintext: back } = await client.decrypt(cmm(), readFileSync(join(dir, 'enc')))
        expect(Buffer.from(back).equals(plaintext)).toBe(true)
        await decryptFile(join(dir, 'enc'), join(dir, 'dec'), batchBytes)
        expect(readFileSync(join(dir, 'dec')).equals(plaintext)).toBe(true)
      }),
      { numRuns: 40 },
    )
  }, 120_000)

  it('refuses more plaintext than the declared length', async () => {
    const dir = tempDir()
    const plain = await plainMaterials(SIGNED)
    writeFileSync(join(dir, 'in'), randomBytes(1000))
    for (const path of paths) {
      usePath(path)
      await expect(encryptFile(plain, join(dir, 'in'), join(dir, 'enc'), { frameLength: 64, batchBytes: 256, messageId: randomBytes(32), plaintextLength: 999 })).rejects.toThrow(
        'more plaintext than the declared length (999 bytes)',
      )
    }
  })

  it('a flipped bit, a reordered frame or a truncation fails with the stream path\'s error; nothing unauthenticated is written', async () => {
    const dir = tempDir()
    const plain = await plainMaterials(SIGNED)
    const frameLength = 64
    const regular = 4 + 12 + frameLength + 16
    const plaintext = randomBytes(10 * frameLength + 9)
    const message = await encryptStream(plain, plaintext, frameLength, randomBytes(32))
    const { parsed } = await readHeader(pieces(message, message.length)[Symbol.asyncIterator](), false)
    const body = parsed.headerLength
    const swapped = Buffer.from(message)
    message.copy(swapped, body + 3 * regular, body + 4 * regular, body + 5 * regular)
    message.copy(swapped, body + 4 * regular, body + 3 * regular, body + 4 * regular)
    const flip = (at: number) => {
      const altered = Buffer.from(message)
      altered[at] ^= 0x10
      return altered
    }
    const cases: Array<[string, Buffer]> = [
      ['ciphertext of frame 6', flip(body + 5 * regular + 20)],
      ['tag of frame 1', flip(body + regular - 1)],
      ['final frame', flip(body + 10 * regular + 30)],
      ['frames 4 and 5 swapped', swapped],
      ['truncated inside frame 8', message.subarray(0, body + 7 * regular + 50)],
      ['truncated after the final frame', message.subarray(0, body + 10 * regular + 4 + 4 + 12 + 4 + 9 + 16)],
    ]
    for (const [label, altered] of cases) {
      const streamError = await jsDecryptError(altered)
      expect(streamError, label).toBeDefined()
      for (const path of paths) {
        for (const batchBytes of [regular * 2, 100, 1 << 20]) {
          usePath(path)
          writeFileSync(join(dir, 'enc'), altered)
          const error = await decryptFile(join(dir, 'enc'), join(dir, 'dec'), batchBytes).then(() => undefined, (err: Error) => err)
          expect(error?.message, `${label} ${path} ${batchBytes}`).toBe(streamError)
          // Whatever was written is plaintext of frames that authenticated, in order.
          const written = readFileSync(join(dir, 'dec'))
          expect(plaintext.subarray(0, written.length).equals(written), `${label} ${path} ${batchBytes}`).toBe(true)
        }
      }
    }
  })
})

async function jsDecryptError(message: Buffer): Promise<string | undefined> {
  const iterator = pieces(message, 1000)[Symbol.asyncIterator]()
  const { parsed, buffered } = await readHeader(iterator, false)
  const material = await resolveDecryptionMaterials(parsed, { cmm: cmm(), commitmentPolicy: REQUIRE_ENCRYPT_ALLOW_DECRYPT })
  return decryptWithMaterials(material, { parsed, headerBytes: buffered, rest: iterator }, new Sink()).then(() => undefined, (err: Error) => err.message)
}

describe('FileChunkReader', () => {
  it('keeps the unread tail in front of what it reads next, across reads shorter and longer than its target', async () => {
    const dir = tempDir()
    const data = randomBytes(5000)
    writeFileSync(join(dir, 'data'), data)
    const fd = openSync(join(dir, 'data'), 'r')
    try {
      const first = Buffer.alloc(10)
      ;(await import('node:fs')).readSync(fd, first, 0, 10, null)
      const reader = new FileChunkReader(first, fd, 300, new FrameBuffers(), noStop)
      let at = 0
      const steps = [3, 7, 1, 299, 2, 301, 1000, 5, 2000]
      for (const step of steps) {
        expect(await reader.ensure(step)).toBe(true)
        expect(reader.buffer.subarray(reader.position, reader.position + step).equals(data.subarray(at, at + step))).toBe(true)
        // Consume part of it, leaving a tail to carry over.
        const take = Math.max(1, Math.floor(step / 2))
        reader.position += take
        at += take
      }
      expect(await reader.ensure(data.length - at + 1)).toBe(false)
      expect(reader.available).toBe(data.length - at)
      expect(reader.bytesRead).toBe(data.length)
      expect(reader.ended).toBe(true)
    } finally {
      closeSync(fd)
    }
  })

  it('calls its stop check before every read and stops when it throws', async () => {
    const dir = tempDir()
    writeFileSync(join(dir, 'data'), randomBytes(1000))
    const fd = openSync(join(dir, 'data'), 'r')
    try {
      let checks = 0
      const reader = new FileChunkReader(Buffer.alloc(0), fd, 100, new FrameBuffers(), () => {
        if (++checks > 2) throw new Error('stopped')
      })
      await reader.ensure(100)
      await reader.ensure(150)
      await expect(reader.ensure(250)).rejects.toThrow('stopped')
      expect(checks).toBe(3)
    } finally {
      closeSync(fd)
    }
  })
})
