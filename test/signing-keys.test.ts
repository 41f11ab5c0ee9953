// Signing key pairs made ahead of time (src/keys/signing-keys.ts) and the materials manager that uses them
// (DefaultMaterialsManager in src/keys/materials.ts): the PEM is byte for byte the SDK's own encoding, each
// message gets a key pair of its own whose public key is in its encryption context, pairs come from the
// registered source (the pool's workers) when there is one, and the messages still decrypt with the SDK.
import { afterEach, describe, expect, it } from 'vitest'
import { createECDH, createPrivateKey, createPublicKey, randomBytes } from 'node:crypto'
import { createRequire } from 'node:module'
import {
  AlgorithmSuiteIdentifier,
  CommitmentPolicy,
  NodeAlgorithmSuite,
  RawAesKeyringNode,
  RawAesWrappingSuiteIdentifier,
  buildClient,
} from '@aws-crypto/client-node'
import { ecPrivateKeyPem, ecPublicKeyPem, nextSigningKeyPair, provideSigningKeyPairs, signingKeyStats } from '../src/keys/signing-keys.js'
import { buildMaterialsManager } from '../src/keys/materials.js'
import { makeSigningKeyPairs } from '../src/message/pool-worker.js'

// The SDK's own encoder (asn1.js), which ecPrivateKeyPem replaces; not exported from the package index.
const require = createRequire(import.meta.url)
const sdkPem = require('@aws-crypto/material-management/build/main/src/pem_helpers.js') as {
  privateKeyPem(curve: string, privateKey: Buffer, publicKey: Buffer): string
  publicKeyPem(curve: string, publicKey: Buffer): string
}

const keyring = new RawAesKeyringNode({
  keyName: 'k1',
  keyNamespace: 'envcrypt',
  unencryptedMasterKey: new Uint8Array(randomBytes(32)),
  wrappingSuite: RawAesWrappingSuiteIdentifier.AES256_GCM_IV12_TAG16_NO_PADDING,
})
const SIGNED = AlgorithmSuiteIdentifier.ALG_AES256_GCM_IV12_TAG16_HKDF_SHA512_COMMIT_KEY_ECDSA_P384
const P256 = AlgorithmSuiteIdentifier.ALG_AES128_GCM_IV12_TAG16_HKDF_SHA256_ECDSA_P256

afterEach(() => provideSigningKeyPairs(undefined))

describe('ecPrivateKeyPem', () => {
  for (const curve of ['secp384r1', 'prime256v1']) {
    it(`${curve}: the same text as the SDK's asn1.js encoder, and a key OpenSSL reads with the same public point`, () => {
      for (let i = 0; i < 20; i++) {
        const ecdh = createECDH(curve)
        ecdh.generateKeys()
        const point = ecdh.getPublicKey(undefined, 'compressed')
        const field = curve === 'secp384r1' ? 48 : 32
        const raw = ecdh.getPrivateKey()
        const scalar = Buffer.concat([Buffer.alloc(field - raw.length), raw])
        const pem = ecPrivateKeyPem(curve, scalar, point)
        expect(pem).toBe(sdkPem.privateKeyPem(curve, scalar, point))
        const exported = createPublicKey(createPrivateKey(pem)).export({ format: 'jwk' })
        const uncompressed = ecdh.getPublicKey()
        expect(Buffer.from(exported.x!, 'base64url').equals(uncompressed.subarray(1, 1 + field))).toBe(true)
        // The verification side: the SPKI PEM of the uncompressed point, as the SDK's publicKeyPem.
        const spki = ecPublicKeyPem(curve, uncompressed)
        expect(spki).toBe(sdkPem.publicKeyPem(curve, uncompressed))
        expect(createPublicKey(spki).export({ format: 'jwk' }).y).toBe(exported.y)
      }
    })
  }
})

describe('the materials manager with a key pair source', () => {
  it('takes each signed message\'s key pair from the source, one per message, and the SDK decrypts the messages', async () => {
    let asked = 0
    provideSigningKeyPairs(async (curve, count) => {
      asked += count
      return makeSigningKeyPairs({ curve, count })
    })
    const before = { ...signingKeyStats }
    const cmm = buildMaterialsManager(keyring)
    const client = buildClient(CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    const publicKeys = new Set<string>()
    const messages = await Promise.all(
      Array.from({ length: 12 }, async (_, i) => {
        const plaintext = randomBytes(100 + i)
        const { result, messageHeader } = await client.encrypt(cmm, plaintext, { suiteId: SIGNED, encryptionContext: { n: String(i) } })
        publicKeys.add(messageHeader.encryptionContext['aws-crypto-public-key']!)
        return { plaintext, result }
      }),
    )
    expect(publicKeys.size).toBe(12)
    expect(signingKeyStats.fromSource - before.fromSource).toBe(12)
    expect(signingKeyStats.madeHere - before.madeHere).toBe(0)
    expect(asked).toBeGreaterThanOrEqual(12)
    for (const { plaintext, result } of messages) {
      expect(Buffer.from((await client.decrypt(keyring, result)).plaintext).equals(plaintext)).toBe(true)
    }
  })

  it('a P-256 suite gets P-256 pairs; unsigned suites take none; a failing source falls back to making them here', async () => {
    provideSigningKeyPairs(async () => {
      throw new Error('pool closed')
    })
    const before = { ...signingKeyStats }
    const cmm = buildMaterialsManager(keyring)
    const client = buildClient(CommitmentPolicy.FORBID_ENCRYPT_ALLOW_DECRYPT)
    const { result, messageHeader } = await client.encrypt(cmm, Buffer.from('p-256'), { suiteId: P256 })
    expect(Buffer.from(messageHeader.encryptionContext['aws-crypto-public-key']!, 'base64')).toHaveLength(33)
    expect(Buffer.from((await client.decrypt(keyring, result)).plaintext).toString()).toBe('p-256')
    await client.encrypt(cmm, Buffer.from('unsigned'), { suiteId: AlgorithmSuiteIdentifier.ALG_AES256_GCM_IV12_TAG16_HKDF_SHA256 })
    expect(signingKeyStats.madeHere - before.madeHere).toBe(1)
    expect(signingKeyStats.fromSource - before.fromSource).toBe(0)
  })

  it('without a source, nextSigningKeyPair makes the pair at once; pairs are never handed out twice', async () => {
    const seen = new Set<string>()
    for (let i = 0; i < 5; i++) {
      const pair = await nextSigningKeyPair('secp384r1')
      expect(pair.scalar).toHaveLength(48)
      expect(pair.compressPoint).toHaveLength(49)
      seen.add(pair.compressPoint.toString('hex'))
    }
    expect(seen.size).toBe(5)
    expect(new NodeAlgorithmSuite(SIGNED).signatureCurve).toBe('secp384r1')
  })
})

describe('the raw AES keyring (-w provider=raw-aes) with its synchronous data keys', () => {
  it('gives every message its own data key, and the SDK\'s own raw AES keyring decrypts them', async () => {
    const { writeFileSync, mkdtempSync } = await import('node:fs')
    const { tmpdir } = await import('node:os')
    const { join } = await import('node:path')
    const { buildKeyring, parseWrappingKeySpec } = await import('../src/keys/keyrings.js')
    const dir = mkdtempSync(join(tmpdir(), 'envcrypt-keyring-'))
    const keyBytes = randomBytes(32)
    writeFileSync(join(dir, 'key.bin'), keyBytes, { mode: 0o600 })
    const spec = parseWrappingKeySpec(['provider=raw-aes', 'namespace=envcrypt', 'key=k1', `material=file://${join(dir, 'key.bin')}`])
    const setup = buildKeyring([spec], 'encrypt', { kmsCalls: {}, warn: () => undefined })
    const sdkKeyring = new RawAesKeyringNode({ keyName: 'k1', keyNamespace: 'envcrypt', unencryptedMasterKey: new Uint8Array(keyBytes), wrappingSuite: RawAesWrappingSuiteIdentifier.AES256_GCM_IV12_TAG16_NO_PADDING })
    const client = buildClient(CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    const dataKeys = new Set<string>()
    for (let i = 0; i < 70; i++) {
      const material = await setup.keyring.onEncrypt(new (await import('@aws-crypto/client-node')).NodeEncryptionMaterial(new NodeAlgorithmSuite(SIGNED), {}))
      const key = Buffer.from((await import('@aws-crypto/client-node')).unwrapDataKey(material.getUnencryptedDataKey()))
      expect(key).toHaveLength(32)
      dataKeys.add(key.toString('hex'))
      material.zeroUnencryptedDataKey()
    }
    expect(dataKeys.size).toBe(70)
    const { result } = await client.encrypt(setup.keyring, Buffer.from('wrapped here'))
    expect(Buffer.from((await client.decrypt(sdkKeyring, result)).plaintext).toString()).toBe('wrapped here')
    setup.dispose()
  })
})

describe('makeSigningKeyPairs: the workers\' key pairs, native and JavaScript', () => {
  for (const native of [true, false]) {
    it(`${native ? 'native kernel' : 'ENVCRYPT_NATIVE=0 (Node\'s ECDH)'}: every record's scalar gives its public point, on P-384 and P-256`, () => {
      if (!native) process.env.ENVCRYPT_NATIVE = '0'
      try {
        for (const [curve, field] of [['secp384r1', 48], ['prime256v1', 32]] as const) {
          const records = Buffer.from(makeSigningKeyPairs({ curve, count: 6 }))
          expect(records).toHaveLength(6 * (2 * field + 1))
          const points = new Set<string>()
          for (let at = 0; at < records.length; at += 2 * field + 1) {
            const scalar = records.subarray(at, at + field)
            const point = records.subarray(at + field, at + 2 * field + 1)
            expect(scalar.some((byte) => byte !== 0)).toBe(true)
            const ecdh = createECDH(curve)
            ecdh.setPrivateKey(scalar)
            expect(ecdh.getPublicKey(undefined, 'compressed').equals(point)).toBe(true)
            points.add(point.toString('hex'))
          }
          expect(points.size).toBe(6)
        }
      } finally {
        delete process.env.ENVCRYPT_NATIVE
      }
    })
  }
})
