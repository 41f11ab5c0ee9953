// Tampered messages as a spec: any single-bit flip, any truncation and any trailing data is rejected by both
// engines (exhaustively for a small message, property-based for larger ones), the output is never ended
// (so a sink never commits), and the error is one line. Through the real CLI, one run over hundreds of
// tampered files leaves no plaintext of them behind and still decrypts the good ones.
import { beforeAll, describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { Writable } from 'node:stream'
import { randomBytes, randomInt } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import {
  AlgorithmSuiteIdentifier,
  CommitmentPolicy,
  NodeDefaultCryptographicMaterialsManager,
  RawAesKeyringNode,
  RawAesWrappingSuiteIdentifier,
} from '@aws-crypto/client-node'
import { jsEngine } from '../src/message/engine-js.js'
import { readHeader, sdkEngine, type Engine } from '../src/message/engine.js'
import { describeError, IntegrityError } from '../src/errors.js'
import { listFiles, rawAesKey, runCli, tempDir, writeTree } from './helpers/cli.js'
import { expectUntouched, temporariesUnder } from './helpers/faults.js'

const KEY = randomBytes(32)
const cmm = () =>
  new NodeDefaultCryptographicMaterialsManager(
    new RawAesKeyringNode({ keyName: 'k1', keyNamespace: 'envcrypt', unencryptedMasterKey: new Uint8Array(KEY), wrappingSuite: RawAesWrappingSuiteIdentifier.AES256_GCM_IV12_TAG16_NO_PADDING }),
  )
const SIGNED = AlgorithmSuiteIdentifier.ALG_AES256_GCM_IV12_TAG16_HKDF_SHA512_COMMIT_KEY_ECDSA_P384
const UNSIGNED = AlgorithmSuiteIdentifier.ALG_AES256_GCM_IV12_TAG16_HKDF_SHA512_COMMIT_KEY
const POLICY = CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
// A sweep decrypts ~1,300 variants; on a shared 2-core machine that can take minutes (a guard, not a measure).
const SWEEP_TIMEOUT_MS = 300_000

class Sink extends Writable {
  chunks: Buffer[] = []
  override _write(chunk: Buffer, _e: BufferEncoding, done: () => void) {
    this.chunks.push(chunk)
    done()
  }
}

async function* chunked(data: Buffer, size: number): AsyncGenerator<Uint8Array> {
  for (let at = 0; at < data.length; at += size) yield new Uint8Array(data.subarray(at, at + size))
}

async function encrypt(plaintext: Buffer, suiteId: AlgorithmSuiteIdentifier, frameLength: number): Promise<Buffer> {
  const sink = new Sink()
  await jsEngine.encrypt(chunked(plaintext, 1 << 16), sink, { cmm: cmm(), commitmentPolicy: POLICY, suiteId, frameLength, encryptionContext: { purpose: 'tamper test' } })
  return Buffer.concat(sink.chunks)
}

/** What the SDK's own stream says when it refuses a message (the sdk engine passes these through). */
const SDK_REFUSALS = [
  /^Invalid Signature$/,
  /^Unsupported state or unable to authenticate data$/,
  /^Incomplete message$/,
  /^Encrypted body sequence out of order\.$/,
  /^Malformed sequenceNumber\.$/,
  /^Overflow, too much data\.$/,
]

/** Decrypt, expecting a refusal: returns the one-line error; the output must not have been ended. The error must
 *  be envcrypt's IntegrityError or, from the sdk engine, one of the SDK's known refusals: a TypeError from a
 *  parser bug is not a refusal. */
async function expectRefusal(engine: Engine, message: Buffer, pieceSize = 64): Promise<string> {
  const sink = new Sink()
  try {
    await engine.decrypt(chunked(message, pieceSize), sink, { cmm: cmm(), commitmentPolicy: POLICY })
  } catch (err) {
    expect(sink.writableEnded, 'a refused message must never end its output').toBe(false)
    const known = err instanceof IntegrityError || (engine.name === 'sdk' && (err as Error).constructor === Error && SDK_REFUSALS.some((p) => p.test((err as Error).message)))
    expect(known, `${engine.name}: not a known refusal: ${(err as Error).constructor.name}: ${(err as Error).message}`).toBe(true)
    const text = describeError(err)
    expect(text).not.toMatch(/\n/)
    expect(text.length).toBeGreaterThan(0)
    return text
  }
  throw new Error(`${engine.name} engine accepted a tampered message`)
}

const flipped = (message: Buffer, bit: number) => {
  const copy = Buffer.from(message)
  copy[bit >> 3] ^= 1 << (bit & 7)
  return copy
}

/** [start, end) byte ranges of the header (with its auth tag), the first frame and the signature footer of a
 *  signed message of `size` bytes in frames of `frameLength` (12-byte IVs, 16-byte tags). */
async function regions(message: Buffer, size: number, frameLength: number) {
  const { parsed } = await readHeader(chunked(message, message.length)[Symbol.asyncIterator](), false)
  const header = parsed.headerLength
  const regular = 4 + 12 + frameLength + 16
  const fullFrames = Math.floor(size / frameLength)
  const bodyEnd = header + fullFrames * regular + (4 + 4 + 12 + 4 + (size - fullFrames * frameLength) + 16)
  return { header: [0, header], firstFrame: [header, header + regular], footer: [bodyEnd, message.length] } as Record<string, [number, number]>
}

describe.each([jsEngine, sdkEngine])('$name engine: exhaustive tampering of a small signed message', (engine) => {
  let message: Buffer
  let parts: Record<string, [number, number]>
  beforeAll(async () => {
    // 40 bytes in 16-byte frames: two regular frames and an 8-byte final frame, then the ECDSA footer.
    message = await encrypt(randomBytes(40), SIGNED, 16)
    parts = await regions(message, 40, 16)
    expect(message.readUInt16BE(parts.footer[0])).toBe(parts.footer[1] - parts.footer[0] - 2)
  })

  for (const region of ['header', 'firstFrame', 'footer']) {
    it(`every single-bit flip in the ${region} is rejected`, async () => {
      const [start, end] = parts[region]
      for (let bit = start * 8; bit < end * 8; bit++) await expectRefusal(engine, flipped(message, bit))
    }, SWEEP_TIMEOUT_MS)
  }

  it('every truncation point is rejected, and so is trailing data', async () => {
    for (let length = 0; length < message.length; length++) await expectRefusal(engine, message.subarray(0, length), 37)
    await expectRefusal(engine, Buffer.concat([message, Buffer.from([0])]))
  })
})

describe.each([jsEngine, sdkEngine])('$name engine: property-based tampering of larger messages', (engine) => {
  it('a random bit flip or truncation of a random 1-200 KB message (signed or not, random frame length) is rejected', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 200_000 }),
        fc.constantFrom(SIGNED, UNSIGNED),
        fc.constantFrom(64, 1000, 4096, 65536),
        fc.double({ min: 0, max: 1, noNaN: true, maxExcluded: true }),
        fc.boolean(),
        fc.integer({ min: 0, max: 7 }),
        async (size, suite, frameLength, where, truncate, bit) => {
          const message = await encrypt(randomBytes(size), suite, frameLength)
          const at = Math.floor(where * message.length)
          await expectRefusal(engine, truncate ? message.subarray(0, at) : flipped(message, at * 8 + bit), 4096)
        },
      ),
      { numRuns: 25 },
    )
  })
})

describe('the CLI over a directory of 300 tampered messages and 20 good ones', () => {
  it('rejects every tampered file with a one-line error naming it, writes nothing for them, decrypts the good ones, exits 1', async () => {
    const dir = tempDir('envcrypt-tamper-')
    const key = rawAesKey(dir)
    const plain: Record<string, Buffer> = {}
    for (let i = 0; i < 20; i++) plain[`good-${i}.bin`] = randomBytes(randomInt(1, 30_000))
    writeTree(join(dir, 'plain'), plain)
    expect((await runCli(['-e', '-r', '-i', join(dir, 'plain'), '-o', join(dir, 'enc'), ...key.spec, '-S', '--suffix'])).code).toBe(0)
    const good = readFileSync(join(dir, 'enc', 'good-0.bin'))
    mkdirSync(join(dir, 'enc', 'bad'))
    const variants: string[] = []
    for (let i = 0; i < 300; i++) {
      const kind = i % 3
      const bytes = kind === 0 ? flipped(good, randomInt(good.length * 8)) : kind === 1 ? good.subarray(0, randomInt(good.length)) : Buffer.concat([good, randomBytes(randomInt(1, 50))])
      const name = `bad/${['flip', 'cut', 'tail'][kind]}-${i}.bin`
      writeFileSync(join(dir, 'enc', name), bytes)
      variants.push(name)
    }
    const summaryPath = join(dir, 'summary.json')
    const result = await expectUntouched([join(dir, 'enc')], () =>
      runCli(['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'dec'), '--suffix', ...key.spec, '-S', '-q', '--summary', summaryPath]),
    )
    expect(result.code).toBe(1)
    const errorLines = result.stderr.trim().split('\n')
    expect(errorLines).toHaveLength(300)
    for (const name of variants) {
      expect(errorLines.filter((line) => line.startsWith(`envcrypt: error: ${join(dir, 'enc', name)}: `))).toHaveLength(1)
    }
    expect(listFiles(join(dir, 'dec'))).toEqual(Object.keys(plain).sort())
    for (const [name, bytes] of Object.entries(plain)) expect(readFileSync(join(dir, 'dec', name)).equals(bytes)).toBe(true)
    expect(existsSync(join(dir, 'dec', 'bad')) ? listFiles(join(dir, 'dec', 'bad')) : []).toEqual([])
    expect(temporariesUnder(join(dir, 'dec'))).toEqual([])
    expect(JSON.parse(readFileSync(summaryPath, 'utf8'))).toMatchObject({ files_ok: 20, files_failed: 300 })
  })
})
