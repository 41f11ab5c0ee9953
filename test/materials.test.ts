// DefaultMaterialsManager is the SDK's default materials manager with one change: the public verification key
// of a signed message is decompressed by OpenSSL instead of bn.js. It must give the SDK's key, byte for byte,
// for every signing curve, and refuse what the SDK refuses.
import { describe, expect, it } from 'vitest'
import { createECDH, randomBytes } from 'node:crypto'
import fc from 'fast-check'
import { AlgorithmSuiteIdentifier, NodeDefaultCryptographicMaterialsManager, RawAesKeyringNode, RawAesWrappingSuiteIdentifier } from '@aws-crypto/client-node'
import { NodeAlgorithmSuite } from '@aws-crypto/material-management-node'
import { DefaultMaterialsManager } from '../src/keys/materials.js'

const keyring = new RawAesKeyringNode({
  keyName: 'k',
  keyNamespace: 'envcrypt',
  unencryptedMasterKey: new Uint8Array(randomBytes(32)),
  wrappingSuite: RawAesWrappingSuiteIdentifier.AES256_GCM_IV12_TAG16_NO_PADDING,
})
const ours = new DefaultMaterialsManager(keyring)
const sdks = new NodeDefaultCryptographicMaterialsManager(keyring)

const signedSuites = Object.values(AlgorithmSuiteIdentifier)
  .filter((id): id is AlgorithmSuiteIdentifier => typeof id === 'number')
  .map((id) => new NodeAlgorithmSuite(id))
  .filter((suite) => suite.signatureCurve)

describe('DefaultMaterialsManager: the verification key', () => {
  for (const suite of signedSuites) {
    it(`${suite.name} (${suite.signatureCurve}): the same public key as the SDK's decoder, for random keys`, () => {
      fc.assert(
        fc.property(fc.integer(), () => {
          const ecdh = createECDH(suite.signatureCurve!)
          ecdh.generateKeys()
          const context = { purpose: 'test', 'aws-crypto-public-key': ecdh.getPublicKey('base64', 'compressed') }
          const mine = ours._initializeDecryptionMaterial(suite, context)
          const theirs = sdks._initializeDecryptionMaterial(suite, context)
          expect(mine.verificationKey!.publicKey).toEqual(theirs.verificationKey!.publicKey)
          expect(mine.encryptionContext).toEqual(theirs.encryptionContext)
          expect(mine.suite.id).toBe(suite.id)
        }),
        { numRuns: 20 },
      )
    })
  }

  it('a public key that is not a point on the curve is refused, naming the context key', () => {
    const suite = signedSuites.find((s) => s.signatureCurve === 'secp384r1')!
    const notAPoint = Buffer.concat([Buffer.from([0x02]), Buffer.alloc(48, 0xff)]).toString('base64')
    expect(() => ours._initializeDecryptionMaterial(suite, { 'aws-crypto-public-key': notAPoint })).toThrow(
      /public signing key \(aws-crypto-public-key in its encryption context\) is not a point on secp384r1/,
    )
  })

  it('what the SDK refuses is still refused by the SDK: no key for a signed suite, a key for an unsigned one', () => {
    const signed = signedSuites[0]!
    expect(() => ours._initializeDecryptionMaterial(signed, { purpose: 'no key' })).toThrow(/Context does not contain required public key/)
    const unsigned = new NodeAlgorithmSuite(AlgorithmSuiteIdentifier.ALG_AES256_GCM_IV12_TAG16_HKDF_SHA512_COMMIT_KEY)
    const ecdh = createECDH('secp384r1')
    ecdh.generateKeys()
    expect(() => ours._initializeDecryptionMaterial(unsigned, { 'aws-crypto-public-key': ecdh.getPublicKey('base64', 'compressed') })).toThrow(
      /public verification key for unsigned algorithm suite/,
    )
  })
})
