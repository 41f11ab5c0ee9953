// The native small-file path of the pool worker (src/message/small-files.ts, native/small-files.cc): a batch of
// small files encrypted in one native call. Run here in-process, through the worker's own entry point, with
// materials from the real materials manager and raw AES keyring: every message it writes decrypts with the
// SDK (`buildClient().decrypt`), for signed and unsigned suites, with and without caching, at empty and
// frame-edge sizes, and the same tasks with the native path off give messages the SDK reads too. Then what
// the path must keep: no-clobber, replacing, an interrupted batch, an input that changed, the named-temporary
// fallback, and no temporary left behind.
import { afterEach, describe, expect, it } from 'vitest'
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import {
  AlgorithmSuiteIdentifier,
  CommitmentPolicy,
  NodeAlgorithmSuite,
  RawAesKeyringNode,
  RawAesWrappingSuiteIdentifier,
  buildClient,
  unwrapDataKey,
  type NodeMaterialsManager,
} from '@aws-crypto/client-node'
import runFileBatch, { type EncryptFileTask } from '../src/message/pool-worker.js'
import { smallFileKernel, smallFileOptions, smallFileStats, signingScalarOf } from '../src/message/small-files.js'
import { buildMaterialsManager } from '../src/keys/materials.js'
import { nativeActive } from '../src/message/native.js'
import { parseHeader } from '../src/message/engine.js'
import type { MessageHeader } from '@aws-crypto/serialize'
import { tempDir } from './helpers/cli.js'

const built = smallFileKernel() !== undefined
const reason = built ? '' : ' (skipped: the native kernel did not build here)'
const { REQUIRE_ENCRYPT_REQUIRE_DECRYPT, FORBID_ENCRYPT_ALLOW_DECRYPT, REQUIRE_ENCRYPT_ALLOW_DECRYPT } = CommitmentPolicy
const SIGNED = AlgorithmSuiteIdentifier.ALG_AES256_GCM_IV12_TAG16_HKDF_SHA512_COMMIT_KEY_ECDSA_P384
const UNSIGNED = AlgorithmSuiteIdentifier.ALG_AES256_GCM_IV12_TAG16_HKDF_SHA512_COMMIT_KEY
const V1_P256 = AlgorithmSuiteIdentifier.ALG_AES128_GCM_IV12_TAG16_HKDF_SHA256_ECDSA_P256
const V1_PLAIN = AlgorithmSuiteIdentifier.ALG_AES128_GCM_IV12_TAG16
const notStopped = () => new Int32Array(new SharedArrayBuffer(4))

const keyBytes = randomBytes(32)
const keyring = () =>
  new RawAesKeyringNode({
    keyName: 'k1',
    keyNamespace: 'envcrypt',
    unencryptedMasterKey: new Uint8Array(keyBytes),
    wrappingSuite: RawAesWrappingSuiteIdentifier.AES256_GCM_IV12_TAG16_NO_PADDING,
  })

const committing = (suiteId: AlgorithmSuiteIdentifier) => new NodeAlgorithmSuite(suiteId).commitment === 'KEY'

/** A pool encrypt task as the main thread builds one (pool.ts encryptFile), from real materials. */
async function taskFor(cmm: NodeMaterialsManager, suiteId: AlgorithmSuiteIdentifier, inputPath: string, outDir: string, name: string, frameLength: number, size: number): Promise<EncryptFileTask> {
  const material = await cmm.getEncryptionMaterials({
    suite: new NodeAlgorithmSuite(suiteId),
    encryptionContext: { purpose: 'small files', 'ünï': '✓' },
    plaintextLength: size,
    commitmentPolicy: committing(suiteId) ? REQUIRE_ENCRYPT_REQUIRE_DECRYPT : FORBID_ENCRYPT_ALLOW_DECRYPT,
  })
  const signatureKey = material.suite.signatureCurve ? material.signatureKey : undefined
  const task: EncryptFileTask = {
    kind: 'encrypt',
    inputPath,
    output: { temporaryPath: join(outDir, `.envcrypt-tmp-${name}`), finalPath: join(outDir, `${name}.encrypted`), mode: 0o640, fsync: false, noClobber: false },
    suiteId: material.suite.id,
    encryptionContext: { ...material.encryptionContext },
    encryptedDataKeys: material.encryptedDataKeys.map(({ providerId, providerInfo, encryptedDataKey, rawInfo }) => ({
      providerId,
      providerInfo,
      encryptedDataKey: new Uint8Array(encryptedDataKey),
      ...(rawInfo ? { rawInfo: new Uint8Array(rawInfo) } : {}),
    })),
    dataKey: new Uint8Array(unwrapDataKey(material.getUnencryptedDataKey())),
    signatureKey: signatureKey ? { privateKeyPem: signatureKey.privateKey as string, compressPoint: new Uint8Array(signatureKey.compressPoint) } : undefined,
    frameLength,
    plaintextLength: size,
    planned: { size },
  }
  material.zeroUnencryptedDataKey()
  return task
}

async function sdkDecrypt(suiteId: AlgorithmSuiteIdentifier, path: string) {
  const client = buildClient(committing(suiteId) ? REQUIRE_ENCRYPT_REQUIRE_DECRYPT : REQUIRE_ENCRYPT_ALLOW_DECRYPT)
  return client.decrypt(keyring(), readFileSync(path))
}

const sizesFor = (frame: number) => [0, 1, frame - 1, frame, frame + 1, 3 * frame, 3 * frame + 5].filter((n, i, all) => n >= 0 && all.indexOf(n) === i)

/** Write the inputs, run them as one worker batch, and return the directory and what each file held. */
async function encryptBatch(suiteId: AlgorithmSuiteIdentifier, frameLength: number, cmm: NodeMaterialsManager, sizes = sizesFor(frameLength)) {
  const dir = tempDir('envcrypt-small-')
  const files = sizes.map((size) => ({ name: `f-${size}.bin`, data: randomBytes(size) }))
  const tasks: EncryptFileTask[] = []
  for (const { name, data } of files) {
    writeFileSync(join(dir, name), data)
    tasks.push(await taskFor(cmm, suiteId, join(dir, name), dir, name, frameLength, data.length))
  }
  const results = await runFileBatch({ tasks, stop: notStopped() })
  return { dir, files, tasks, results }
}

afterEach(() => {
  delete process.env.ENVCRYPT_NATIVE
  smallFileOptions.namedTemporary = false
})

describe(`native small-file path: what it writes, the SDK reads${reason}`, () => {
  const cases: Array<[string, AlgorithmSuiteIdentifier, number]> = [
    ['signed (default suite), 4 KiB frames', SIGNED, 4096],
    ['signed, 64-byte frames', SIGNED, 64],
    ['unsigned, 64-byte frames', UNSIGNED, 64],
    ['v1 signed P-256, 100-byte frames', V1_P256, 100],
    ['v1 without key derivation, 1-byte frames', V1_PLAIN, 1],
  ]
  for (const [name, suiteId, frame] of cases) {
    for (const caching of [false, true]) {
      it.skipIf(!built)(`${name}${caching ? ', caching' : ''}: every size decrypts with the SDK, and the native path wrote them all`, async () => {
        const cmm = buildMaterialsManager(keyring(), caching ? { capacity: 1, max_age: 60, max_messages_encrypted: 100 } : undefined)
        const before = smallFileStats.files
        const { dir, files, tasks, results } = await encryptBatch(suiteId, frame, cmm)
        expect(results.map((r) => r.ok)).toEqual(files.map(() => true))
        expect(smallFileStats.files - before).toBe(files.length)
        const publicKeys = new Set<string>()
        for (const { name, data } of files) {
          const { plaintext, messageHeader } = await sdkDecrypt(suiteId, join(dir, `${name}.encrypted`))
          expect(Buffer.from(plaintext).equals(data), `${name}`).toBe(true)
          expect(messageHeader.suiteId).toBe(suiteId)
          expect(messageHeader.frameLength).toBe(frame)
          expect(messageHeader.encryptionContext).toMatchObject({ purpose: 'small files', 'ünï': '✓' })
          publicKeys.add(messageHeader.encryptionContext['aws-crypto-public-key'] ?? 'none')
          expect(statSync(join(dir, `${name}.encrypted`)).mode & 0o777).toBe(0o640)
        }
        // Caching shares one data key, and so one signing key, across the messages; without it each has its own.
        const signed = new NodeAlgorithmSuite(suiteId).signatureCurve !== undefined
        expect(publicKeys.size).toBe(!signed ? 1 : caching ? 1 : files.length)
        for (const task of tasks) expect(task.dataKey.every((b) => b === 0)).toBe(true)
        expect(readdirSync(dir).filter((n) => n.startsWith('.envcrypt-tmp-'))).toEqual([])
      })
    }
  }

  it('with ENVCRYPT_NATIVE=0 the same tasks take the JavaScript loop, and the SDK reads those messages too', async () => {
    process.env.ENVCRYPT_NATIVE = '0'
    expect(nativeActive()).toBe(false)
    const before = smallFileStats.files
    const { dir, files, results } = await encryptBatch(SIGNED, 64, buildMaterialsManager(keyring()))
    expect(results.every((r) => r.ok)).toBe(true)
    expect(smallFileStats.files).toBe(before)
    for (const { name, data } of files) expect(Buffer.from((await sdkDecrypt(SIGNED, join(dir, `${name}.encrypted`))).plaintext).equals(data)).toBe(true)
  })

  it.skipIf(!built)('the header the worker reports is the one written (the metadata comes from it)', async () => {
    const { dir, files, results } = await encryptBatch(SIGNED, 4096, buildMaterialsManager(keyring()), [5000])
    const result = results[0]!
    expect(result.ok).toBe(true)
    const reported = (result as { header: MessageHeader }).header
    const written = parseHeader(readFileSync(join(dir, `${files[0]!.name}.encrypted`)))
    if (!written) throw new Error('the output has no header')
    expect(Buffer.from(reported.messageId).equals(Buffer.from(written.header.messageId))).toBe(true)
    expect(Buffer.from((reported as { suiteData: Uint8Array }).suiteData).equals(Buffer.from((written.header as { suiteData: Uint8Array }).suiteData))).toBe(true)
    expect(reported.encryptionContext).toEqual(written.header.encryptionContext)
    expect(reported.encryptedDataKeys.map((edk) => Buffer.from(edk.encryptedDataKey).toString('hex'))).toEqual(written.header.encryptedDataKeys.map((edk) => Buffer.from(edk.encryptedDataKey).toString('hex')))
    expect([reported.suiteId, reported.frameLength, reported.version]).toEqual([written.header.suiteId, written.header.frameLength, written.header.version])
  })
})

describe(`native small-file path: outputs are published whole or not at all${reason}`, () => {
  it.skipIf(!built)('no-clobber: a new output is linked into place; an existing one fails naming it and stays as it was', async () => {
    const dir = tempDir('envcrypt-small-')
    writeFileSync(join(dir, 'a.bin'), 'new content')
    writeFileSync(join(dir, 'a.bin.encrypted'), 'older output')
    writeFileSync(join(dir, 'b.bin'), 'other')
    const cmm = buildMaterialsManager(keyring())
    const tasks = [await taskFor(cmm, SIGNED, join(dir, 'a.bin'), dir, 'a.bin', 4096, 11), await taskFor(cmm, SIGNED, join(dir, 'b.bin'), dir, 'b.bin', 4096, 5)]
    for (const task of tasks) task.output.noClobber = true
    const results = await runFileBatch({ tasks, stop: notStopped() })
    expect(results[0]).toEqual({ ok: false, error: `output ${join(dir, 'a.bin.encrypted')} already exists (not overwritten)`, integrity: false })
    expect(readFileSync(join(dir, 'a.bin.encrypted'), 'utf8')).toBe('older output')
    expect(results[1]!.ok).toBe(true)
    expect(Buffer.from((await sdkDecrypt(SIGNED, join(dir, 'b.bin.encrypted'))).plaintext).toString()).toBe('other')
    expect(readdirSync(dir).sort()).toEqual(['a.bin', 'a.bin.encrypted', 'b.bin', 'b.bin.encrypted'])
  })

  for (const named of [false, true]) {
    it.skipIf(!built)(`an existing output is replaced whole${named ? ' (named-temporary fallback)' : ''}, and no temporary remains`, async () => {
      smallFileOptions.namedTemporary = named
      const dir = tempDir('envcrypt-small-')
      writeFileSync(join(dir, 'a.bin'), 'replacement')
      writeFileSync(join(dir, 'a.bin.encrypted'), 'older output')
      writeFileSync(join(dir, 'c.bin'), 'fresh')
      const cmm = buildMaterialsManager(keyring())
      const tasks = [await taskFor(cmm, UNSIGNED, join(dir, 'a.bin'), dir, 'a.bin', 4096, 11), await taskFor(cmm, UNSIGNED, join(dir, 'c.bin'), dir, 'c.bin', 4096, 5)]
      const before = smallFileStats.files
      const results = await runFileBatch({ tasks, stop: notStopped() })
      expect(results.map((r) => r.ok)).toEqual([true, true])
      expect(smallFileStats.files - before).toBe(2)
      expect(Buffer.from((await sdkDecrypt(UNSIGNED, join(dir, 'a.bin.encrypted'))).plaintext).toString()).toBe('replacement')
      expect(Buffer.from((await sdkDecrypt(UNSIGNED, join(dir, 'c.bin.encrypted'))).plaintext).toString()).toBe('fresh')
      expect(readdirSync(dir).sort()).toEqual(['a.bin', 'a.bin.encrypted', 'c.bin', 'c.bin.encrypted'])
    })
  }

  it.skipIf(!built)('an interrupted batch creates nothing and reports every file as interrupted', async () => {
    const dir = tempDir('envcrypt-small-')
    writeFileSync(join(dir, 'a.bin'), 'x')
    const task = await taskFor(buildMaterialsManager(keyring()), SIGNED, join(dir, 'a.bin'), dir, 'a.bin', 4096, 1)
    const stop = notStopped()
    Atomics.store(stop, 0, 1)
    const results = await runFileBatch({ tasks: [task], stop })
    expect(results).toEqual([{ ok: false, error: 'interrupted', integrity: false, interrupted: true }])
    expect(readdirSync(dir)).toEqual(['a.bin'])
    expect(task.dataKey.every((b) => b === 0)).toBe(true)
  })

  it.skipIf(!built)('an input whose size is not the planned one fails as changed, and nothing is written for it', async () => {
    const dir = tempDir('envcrypt-small-')
    writeFileSync(join(dir, 'grew.bin'), 'planned at 5, now longer')
    writeFileSync(join(dir, 'shrank.bin'), 'abc')
    const cmm = buildMaterialsManager(keyring())
    const tasks = [await taskFor(cmm, SIGNED, join(dir, 'grew.bin'), dir, 'grew.bin', 4096, 5), await taskFor(cmm, SIGNED, join(dir, 'shrank.bin'), dir, 'shrank.bin', 4096, 10)]
    const results = await runFileBatch({ tasks, stop: notStopped() })
    expect(results[0]).toEqual({ ok: false, integrity: false, error: 'the input changed while being read (size 5 became 24 bytes); nothing was written for it, run again' })
    expect(results[1]).toEqual({ ok: false, integrity: false, error: 'the input changed while being read (size 10 became 3 bytes); nothing was written for it, run again' })
    expect(readdirSync(dir).sort()).toEqual(['grew.bin', 'shrank.bin'])
  })

  it.skipIf(!built)('the planner\'s mtime and inode: the same file passes, a modified or replaced one fails as changed', async () => {
    const dir = tempDir('envcrypt-small-')
    for (const name of ['same.bin', 'touched.bin', 'replaced.bin']) writeFileSync(join(dir, name), 'twelve bytes')
    const seen = (name: string) => {
      const { size, mtimeMs, ino } = statSync(join(dir, name))
      return { size, mtimeMs, ino }
    }
    const cmm = buildMaterialsManager(keyring())
    const tasks: EncryptFileTask[] = []
    for (const name of ['same.bin', 'touched.bin', 'replaced.bin']) {
      tasks.push({ ...(await taskFor(cmm, UNSIGNED, join(dir, name), dir, name, 4096, 12)), planned: seen(name) })
    }
    tasks[1]!.planned = { ...tasks[1]!.planned, mtimeMs: tasks[1]!.planned.mtimeMs! - 1000 }
    tasks[2]!.planned = { ...tasks[2]!.planned, ino: tasks[2]!.planned.ino! + 1 }
    const results = await runFileBatch({ tasks, stop: notStopped() })
    expect(results[0]!.ok).toBe(true)
    expect(results[1]).toEqual({ ok: false, integrity: false, error: 'the input changed while being read (modified); nothing was written for it, run again' })
    expect(results[2]).toEqual({ ok: false, integrity: false, error: 'the input changed while being read (replaced by another file); nothing was written for it, run again' })
    expect(readdirSync(dir).sort()).toEqual(['replaced.bin', 'same.bin', 'same.bin.encrypted', 'touched.bin'])
  })

  it.skipIf(!built)('a missing input and an output directory that does not exist fail per file with the system error', async () => {
    const dir = tempDir('envcrypt-small-')
    writeFileSync(join(dir, 'a.bin'), 'abc')
    const cmm = buildMaterialsManager(keyring())
    const missing = await taskFor(cmm, SIGNED, join(dir, 'gone.bin'), dir, 'gone.bin', 4096, 3)
    const nowhere = await taskFor(cmm, SIGNED, join(dir, 'a.bin'), join(dir, 'no-such-dir'), 'a.bin', 4096, 3)
    const results = await runFileBatch({ tasks: [missing, nowhere], stop: notStopped() })
    expect(results[0]).toEqual({ ok: false, integrity: false, error: `no such file or directory: ${join(dir, 'gone.bin')}` })
    expect(results[1]!.ok).toBe(false)
    expect((results[1] as { error: string }).error).toMatch(/^no such file or directory: /)
    expect(existsSync(join(dir, 'no-such-dir'))).toBe(false)
  })
})

describe('signingScalarOf: the raw private scalar of the SDK\'s signing key PEM', () => {
  it('matches the key the SDK signs with (same public point), and refuses other PEMs', async () => {
    const material = await buildMaterialsManager(keyring()).getEncryptionMaterials({
      suite: new NodeAlgorithmSuite(SIGNED),
      encryptionContext: {},
      commitmentPolicy: REQUIRE_ENCRYPT_REQUIRE_DECRYPT,
    })
    const pem = material.signatureKey!.privateKey as string
    const scalar = signingScalarOf(pem, 48)!
    expect(scalar).toHaveLength(48)
    const { createECDH } = await import('node:crypto')
    const ecdh = createECDH('secp384r1')
    ecdh.setPrivateKey(scalar)
    expect(ecdh.getPublicKey(undefined, 'compressed').equals(Buffer.from(material.signatureKey!.compressPoint))).toBe(true)
    expect(signingScalarOf(pem, 32)).toBeUndefined()
    // A scalar with a leading zero byte comes shorter from ECDH.getPrivateKey: it is padded back to 48 bytes.
    const short = Buffer.from(pem.split('\n').slice(1, -2).join(''), 'base64')
    const shortDer = Buffer.concat([Buffer.from([0x30, short[1]! - 1, 0x02, 0x01, 0x01, 0x04, 47]), short.subarray(8)])
    const shortPem = `-----BEGIN EC PRIVATE KEY-----\n${shortDer.toString('base64')}\n-----END EC PRIVATE KEY-----\n`
    expect(signingScalarOf(shortPem, 48)!.equals(Buffer.concat([Buffer.alloc(1), scalar.subarray(1)]))).toBe(true)
    expect(signingScalarOf(pem.replace('EC PRIVATE KEY', 'PRIVATE KEY'), 48)).toBeUndefined()
    material.zeroUnencryptedDataKey()
  })
})
