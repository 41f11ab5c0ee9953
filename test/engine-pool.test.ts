// The pool engine (engine-js's frame loop on worker threads, through the real CLI) writes and reads the
// same format as the SDK: every message it writes decrypts with the SDK's own `decrypt`, it decrypts what
// the SDK and the Python CLI write, tampered messages leave nothing behind, and caching limits stay exact
// with materials resolved on the main thread while the frames are done in workers.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import {
  AlgorithmSuiteIdentifier,
  CommitmentPolicy,
  CommitmentPolicySuites,
  RawAesKeyringNode,
  RawAesWrappingSuiteIdentifier,
  buildClient,
  getLocalCryptographicMaterialsCache,
  KeyringNode,
  NodeCachingMaterialsManager,
  type EncryptedDataKey,
  type NodeDecryptionMaterial,
  type NodeEncryptionMaterial,
} from '@aws-crypto/client-node'
import { algorithmName } from '../src/message/algorithms.js'
import { localKmsEnv, startLocalKms, type LocalKms } from '../src/local-kms/server.js'
import { listFiles, rawAesKey, readJsonLines, runCli, tempDir, VECTORS, writeTree } from './helpers/cli.js'

const POOL = ['--engine', 'pool']
const { REQUIRE_ENCRYPT_REQUIRE_DECRYPT, REQUIRE_ENCRYPT_ALLOW_DECRYPT, FORBID_ENCRYPT_ALLOW_DECRYPT } = CommitmentPolicy

const allSuites = Object.values(AlgorithmSuiteIdentifier).filter((v): v is AlgorithmSuiteIdentifier => typeof v === 'number')
const isCommitting = (id: AlgorithmSuiteIdentifier) => Boolean(CommitmentPolicySuites[REQUIRE_ENCRYPT_REQUIRE_DECRYPT].encryptEnabledSuites[id])
const policyName = (id: AlgorithmSuiteIdentifier) => (isCommitting(id) ? 'require-encrypt-require-decrypt' : 'forbid-encrypt-allow-decrypt')

function keyringFor(path: string, name: string) {
  return new RawAesKeyringNode({
    keyName: name,
    keyNamespace: 'envcrypt',
    unencryptedMasterKey: new Uint8Array(readFileSync(path)),
    wrappingSuite: RawAesWrappingSuiteIdentifier.AES256_GCM_IV12_TAG16_NO_PADDING,
  })
}

/** Sizes around frame boundaries, plus zero and several frames. */
const sizesFor = (frame: number) => [0, 1, frame - 1, frame, frame + 1, 3 * frame, 3 * frame + 5].filter((n, i, all) => n >= 0 && all.indexOf(n) === i)

describe('pool engine: what it writes, the SDK reads', () => {
  for (const suiteId of allSuites) {
    it(`suite ${algorithmName(suiteId)}: sizes 0 to several frames, with an encryption context`, async () => {
      const dir = tempDir()
      const key = rawAesKey(dir)
      const frame = 64
      const files: Record<string, Buffer> = {}
      for (const size of sizesFor(frame)) files[`f-${size}.bin`] = randomBytes(size)
      writeTree(join(dir, 'in'), files)
      const result = await runCli(['-e', '-r', '-i', join(dir, 'in'), '-o', join(dir, 'enc'), ...key.spec, ...POOL, '--algorithm', algorithmName(suiteId),
        '--commitment-policy', policyName(suiteId), '--frame-length', String(frame), '-c', 'purpose=pool test', 'ünïcode=✓', '-S'])
      expect(result.stderr).not.toMatch(/error/)
      expect(result.code).toBe(0)
      const client = buildClient(isCommitting(suiteId) ? REQUIRE_ENCRYPT_REQUIRE_DECRYPT : REQUIRE_ENCRYPT_ALLOW_DECRYPT)
      for (const [name, plaintext] of Object.entries(files)) {
        const { plaintext: clear, messageHeader } = await client.decrypt(keyringFor(key.path, 'k1'), readFileSync(join(dir, 'enc', `${name}.encrypted`)))
        expect(Buffer.from(clear).equals(plaintext)).toBe(true)
        expect(messageHeader.suiteId).toBe(suiteId)
        expect(messageHeader.frameLength).toBe(frame)
        expect(messageHeader.encryptionContext).toMatchObject({ purpose: 'pool test', 'ünïcode': '✓' })
      }
    })
  }

  it('property: random sizes and frame lengths (1 byte to 1 MiB) round-trip through the SDK', async () => {
    const cases = fc.sample(
      fc.record({
        frame: fc.oneof(fc.constantFrom(1, 4096, 1024 * 1024), fc.integer({ min: 1, max: 70_000 })),
        sizes: fc.array(fc.integer({ min: 0, max: 300_000 }), { minLength: 1, maxLength: 4 }),
        signed: fc.boolean(),
      }),
      { numRuns: 6, seed: 5 },
    )
    for (const { frame, sizes, signed } of cases) {
      const dir = tempDir()
      const key = rawAesKey(dir)
      // One-byte frames make a frame per byte: keep those inputs small.
      const files = Object.fromEntries(sizes.map((size, i) => [`p-${i}.bin`, randomBytes(frame === 1 ? size % 3000 : size)]))
      writeTree(join(dir, 'in'), files)
      const algorithm = signed ? 'AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384' : 'AES_256_GCM_HKDF_SHA512_COMMIT_KEY'
      const result = await runCli(['-e', '-r', '-i', join(dir, 'in'), '-o', join(dir, 'enc'), ...key.spec, ...POOL, '--frame-length', String(frame), '--algorithm', algorithm, '-S', '-q'])
      expect(result.code, `frame ${frame}: ${result.stderr}`).toBe(0)
      const client = buildClient(REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
      for (const [name, plaintext] of Object.entries(files)) {
        const { plaintext: clear } = await client.decrypt(keyringFor(key.path, 'k1'), readFileSync(join(dir, 'enc', `${name}.encrypted`)))
        expect(Buffer.from(clear).equals(plaintext), `frame ${frame}, ${plaintext.length} bytes`).toBe(true)
      }
    }
  })

  it('metadata records the same header fields as the in-thread js engine (message id aside)', async () => {
    const dir = tempDir()
    const key = rawAesKey(dir)
    writeTree(join(dir, 'in'), { 'a.bin': randomBytes(10_000) })
    for (const engine of ['pool', 'js']) {
      expect((await runCli(['-e', '-r', '-i', join(dir, 'in'), '-o', join(dir, engine), ...key.spec, '--engine', engine, '--metadata-output', join(dir, `${engine}.jsonl`), '-c', 'x=y'])).code).toBe(0)
    }
    const strip = (record: any) => {
      const { message_id, commitment_key, encrypted_data_keys, encryption_context, ...rest } = record.header
      return { ...rest, edks: encrypted_data_keys.length, context: Object.keys(encryption_context).sort() }
    }
    expect(strip(readJsonLines(join(dir, 'pool.jsonl'))[0])).toEqual(strip(readJsonLines(join(dir, 'js.jsonl'))[0]))
  })
})

describe('pool engine: what the SDK writes, it reads', () => {
  for (const suiteId of allSuites) {
    it(`suite ${algorithmName(suiteId)}`, async () => {
      const dir = tempDir()
      const key = rawAesKey(dir)
      const keyring = keyringFor(key.path, 'k1')
      const client = buildClient(isCommitting(suiteId) ? REQUIRE_ENCRYPT_REQUIRE_DECRYPT : FORBID_ENCRYPT_ALLOW_DECRYPT)
      const plaintexts: Record<string, Buffer> = {}
      for (const frameLength of [1, 100, 4096]) {
        for (const size of [0, 1, 250, 4096 * 2]) {
          const name = `sdk-${frameLength}-${size}`
          const data = randomBytes(frameLength === 1 ? Math.min(size, 300) : size)
          plaintexts[name] = data
          const { result } = await client.encrypt(keyring, data, { suiteId, frameLength, encryptionContext: { team: 'pool' } })
          writeTree(join(dir, 'enc'), { [name]: Buffer.from(result) })
        }
      }
      const run = await runCli(['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'dec'), '--suffix', ...key.spec, ...POOL, '--commitment-policy', 'require-encrypt-allow-decrypt', '-c', 'team=pool', '-S'])
      expect(run.stderr).not.toMatch(/error/)
      expect(run.code).toBe(0)
      for (const [name, data] of Object.entries(plaintexts)) expect(readFileSync(join(dir, 'dec', name)).equals(data), name).toBe(true)
    })
  }
})

describe('pool engine: the Python CLI vectors', () => {
  const spec = ['-w', 'provider=raw-aes', 'key=key1', 'namespace=envcrypt-test', `material=file://${join(VECTORS, 'key.bin')}`]
  const plaintexts = join(VECTORS, 'plaintext')
  for (const [folder, extra] of [
    ['ciphertext-default', []],
    ['ciphertext-unsigned', []],
    ['ciphertext-v1-noncommitting', ['--commitment-policy', 'require-encrypt-allow-decrypt']],
  ] as const) {
    it(`decrypts ${folder} byte for byte`, async () => {
      const dir = tempDir()
      const result = await runCli(['-d', '-r', '-i', join(VECTORS, folder), '-o', join(dir, 'out'), '--suffix', ...spec, ...extra, ...POOL, '-S', '-q'])
      expect(result.code).toBe(0)
      const names = listFiles(plaintexts)
      expect(listFiles(join(dir, 'out'))).toEqual(names)
      for (const name of names) expect(readFileSync(join(dir, 'out', name)).equals(readFileSync(join(plaintexts, name))), name).toBe(true)
    })
  }

  it('refuses v1 under the default policy and signed messages with --decrypt-unsigned, leaving nothing', async () => {
    const dir = tempDir()
    const v1 = await runCli(['-d', '-r', '-i', join(VECTORS, 'ciphertext-v1-noncommitting'), '-o', join(dir, 'a'), ...spec, ...POOL, '-S', '-q'])
    expect(v1.code).toBe(1)
    expect(v1.stderr).toMatch(/commitment/i)
    const signed = await runCli(['--decrypt-unsigned', '-r', '-i', join(VECTORS, 'ciphertext-default'), '-o', join(dir, 'b'), ...spec, ...POOL, '-S', '-q'])
    expect(signed.code).toBe(1)
    expect(existsSync(join(dir, 'a'))).toBe(false)
    expect(existsSync(join(dir, 'b'))).toBe(false)
  })
})

describe('pool engine: refusals leave nothing behind', () => {
  it('a tampered frame fails that file only; no output and no temporary remain', async () => {
    const dir = tempDir()
    const key = rawAesKey(dir)
    writeTree(join(dir, 'in'), { 'good.bin': randomBytes(50_000), 'bad.bin': randomBytes(3_000_000) })
    expect((await runCli(['-e', '-r', '-i', join(dir, 'in'), '-o', join(dir, 'enc'), ...key.spec, ...POOL, '-S'])).code).toBe(0)
    const bad = join(dir, 'enc', 'bad.bin.encrypted')
    const bytes = readFileSync(bad)
    bytes[bytes.length - 200_000] ^= 1
    writeFileSync(bad, bytes)
    const result = await runCli(['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'dec'), ...key.spec, ...POOL, '-S', '--summary', '-'])
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(/bad\.bin\.encrypted: .*authentication/)
    expect(readdirSync(join(dir, 'dec'))).toEqual(['good.bin.encrypted.decrypted'])
    expect(JSON.parse(result.stdout.toString()).files_failed).toBe(1)
  })

  it('a truncated message and a wrong key fail with one-line errors', async () => {
    const dir = tempDir()
    const key = rawAesKey(dir)
    const other = rawAesKey(dir, 'k1-other')
    writeTree(join(dir, 'in'), { 'a.bin': randomBytes(100_000) })
    expect((await runCli(['-e', '-r', '-i', join(dir, 'in'), '-o', join(dir, 'enc'), ...key.spec, ...POOL, '-S'])).code).toBe(0)
    const encrypted = readFileSync(join(dir, 'enc', 'a.bin.encrypted'))
    writeTree(join(dir, 'cut'), { 'a.bin.encrypted': encrypted.subarray(0, encrypted.length - 120) })
    const truncated = await runCli(['-d', '-r', '-i', join(dir, 'cut'), '-o', join(dir, 'dec1'), ...key.spec, ...POOL, '-S'])
    expect(truncated.code).toBe(1)
    expect(truncated.stderr).toMatch(/a\.bin\.encrypted: /)
    const wrongKey = await runCli(['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'dec2'), ...other.spec.map((t) => t.replace('key=k1-other', 'key=k1')), ...POOL, '-S'])
    expect(wrongKey.code).toBe(1)
    // The truncation shows only at the end, after the output directory was made; no file is left in it.
    expect(existsSync(join(dir, 'dec1')) ? readdirSync(join(dir, 'dec1')) : []).toEqual([])
    expect(existsSync(join(dir, 'dec2'))).toBe(false)
  })
})

describe('pool engine: caching limits stay exact (local KMS)', () => {
  let kms: LocalKms
  let keyArn: string
  let env: Record<string, string>
  beforeAll(async () => {
    kms = await startLocalKms({ latencyMs: 2 })
    keyArn = await kms.createKey('pool.test')
    env = localKmsEnv(kms)
  })
  afterAll(() => kms?.close())

  it('200 files at -j 16: 2 GenerateDataKey calls and 2 data keys; decrypt one Decrypt per data key', async () => {
    const dir = tempDir()
    const files: Record<string, Buffer> = {}
    for (let i = 0; i < 200; i++) files[`f-${String(i).padStart(3, '0')}.bin`] = randomBytes(1000 + i)
    writeTree(join(dir, 'in'), files)
    const caching = ['--caching', 'capacity=1', 'max_age=10', 'max_messages_encrypted=100']
    const meta = join(dir, 'meta.jsonl')
    kms.resetCounts()
    const enc = await runCli(['-e', '-r', '-i', join(dir, 'in'), '-o', join(dir, 'enc'), '-w', `key=${keyArn}`, ...caching, ...POOL, '--metadata-output', meta, '--summary', '-', '-j', '16'], { env })
    expect(enc.code).toBe(0)
    const expected = await sdkDataKeysFor(Object.values(files).map((f) => f.length), { maxMessagesEncrypted: 100 })
    expect(expected).toBe(2)
    expect(JSON.parse(enc.stdout.toString()).kms_calls).toEqual({ GenerateDataKey: expected })
    expect(kms.counts()).toEqual({ GenerateDataKey: expected })
    expect(new Set(readJsonLines(meta).map((r) => r.header.encrypted_data_keys[0].encrypted_data_key)).size).toBe(expected)
    kms.resetCounts()
    const dec = await runCli(['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'dec'), '--suffix', '-w', `key=${keyArn}`, ...caching, ...POOL, '-S', '--summary', '-', '-j', '16'], { env })
    expect(dec.code).toBe(0)
    expect(JSON.parse(dec.stdout.toString()).kms_calls).toEqual({ Decrypt: expected })
    expect(kms.counts()).toEqual({ Decrypt: expected })
    for (const [name, data] of Object.entries(files)) expect(readFileSync(join(dir, 'dec', `${name}.encrypted`)).equals(data)).toBe(true)
  })

  it('max_bytes_encrypted is counted on the main thread: pool and in-thread engines make exactly the calls the SDK\'s caching materials manager makes', async () => {
    const dir = tempDir()
    const files: Record<string, Buffer> = {}
    for (let i = 0; i < 10; i++) files[`b-${i}.bin`] = randomBytes(1000)
    writeTree(join(dir, 'in'), files)
    const expected = await sdkDataKeysFor(Object.values(files).map((f) => f.length), { maxBytesEncrypted: 3000 })
    // Not a trivial limit: several data keys, fewer than files.
    expect(expected).toBeGreaterThan(1)
    expect(expected).toBeLessThan(10)
    for (const engine of ['pool', 'js']) {
      kms.resetCounts()
      const enc = await runCli(['-e', '-r', '-i', join(dir, 'in'), '-o', join(dir, engine), '-w', `key=${keyArn}`, '--caching', 'capacity=1', 'max_age=10', 'max_bytes_encrypted=3000',
        '--engine', engine, '-S', '--summary', '-', '-j', '8'], { env })
      expect(enc.code).toBe(0)
      // Counted at the KMS endpoint, not from envcrypt's own report.
      expect(kms.counts(), `engine ${engine}`).toEqual({ GenerateDataKey: expected })
      expect(JSON.parse(enc.stdout.toString()).kms_calls).toEqual({ GenerateDataKey: expected })
    }
  })
})

/** How many data keys the SDK's own NodeCachingMaterialsManager generates for messages of `sizes` bytes, one
 *  after the other (capacity 1, max_age 10 s), counted by a keyring that counts its generate calls. */
async function sdkDataKeysFor(sizes: number[], limits: { maxBytesEncrypted?: number; maxMessagesEncrypted?: number }): Promise<number> {
  let generated = 0
  const inner = new RawAesKeyringNode({ keyName: 'count', keyNamespace: 'count', unencryptedMasterKey: new Uint8Array(randomBytes(32)), wrappingSuite: RawAesWrappingSuiteIdentifier.AES256_GCM_IV12_TAG16_NO_PADDING })
  class CountingKeyring extends KeyringNode {
    override async _onEncrypt(material: NodeEncryptionMaterial) {
      if (!material.hasUnencryptedDataKey) generated++
      return inner.onEncrypt(material)
    }
    override async _onDecrypt(material: NodeDecryptionMaterial, keys: EncryptedDataKey[]) {
      return inner.onDecrypt(material, keys)
    }
  }
  const cmm = new NodeCachingMaterialsManager({ backingMaterials: new CountingKeyring(), cache: getLocalCryptographicMaterialsCache(1), maxAge: 10_000, ...limits })
  const client = buildClient(REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
  for (const size of sizes) await client.encrypt(cmm, randomBytes(size), { plaintextLength: size })
  return generated
}
