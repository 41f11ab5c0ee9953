// The materials manager behind every message: the keyring alone, or a caching manager in front of it.
// The SDK's cache does not coalesce concurrent misses, so with files in flight the limits
// (max_messages_encrypted, one KMS Decrypt per data key) would overshoot; `serializePerCacheKey` runs the
// lookups for one cache key one at a time, which keeps them exact while different keys proceed in parallel.
import { ECDH } from 'node:crypto'
import { createRequire } from 'node:module'
import {
  CommitmentPolicySuites,
  NodeAlgorithmSuite,
  NodeDecryptionMaterial,
  NodeDefaultCryptographicMaterialsManager,
  NodeEncryptionMaterial,
  type KeyringNode,
  type NodeEncryptionRequest,
  type NodeMaterialsManager,
} from '@aws-crypto/material-management-node'
import { SignatureKey, VerificationKey } from '@aws-crypto/material-management'
import { ENCODED_SIGNER_KEY } from '@aws-crypto/serialize'
import { IntegrityError, UsageError } from '../errors.js'
import { ecPrivateKeyPem, ecPublicKeyPem, nextSigningKeyPair, takeSigningKeyPair, type SigningKeyPair } from './signing-keys.js'

/** The SDK's default materials manager, except that a signed message's public key (compressed in its
 *  encryption context) is decompressed by OpenSSL (`ECDH.convertKey`, ~0.05 ms for P-384) instead of the SDK's
 *  bn.js decoder (~1.8 ms, on the main thread, for every message a cache does not answer: 18 s of 10,000
 *  small files). Same bytes out (test/materials.test.ts); anything unusual goes to the SDK's own code. */
export class DefaultMaterialsManager extends NodeDefaultCryptographicMaterialsManager {
  /** As the SDK's, but the signing key pair comes from signing-keys.ts (made ahead of time on the pool's
   *  workers when it runs) and its PEM from a fixed DER layout rather than asn1.js: the same SignatureKey
   *  and encryption context (test/signing-keys.test.ts). */
  private nextKeyPair?: SigningKeyPair

  override async getEncryptionMaterials(request: NodeEncryptionRequest): Promise<NodeEncryptionMaterial> {
    const suite = request.suite ?? new NodeAlgorithmSuite(CommitmentPolicySuites[request.commitmentPolicy].defaultAlgorithmSuite)
    const pair = suite.signatureCurve ? await nextSigningKeyPair(suite.signatureCurve) : undefined
    // The SDK calls _initializeEncryptionMaterial synchronously, before its first await: it takes this pair.
    this.nextKeyPair = pair
    const pending = super.getEncryptionMaterials(request)
    this.nextKeyPair = undefined
    pair?.scalar.fill(0)
    return pending
  }

  override _initializeEncryptionMaterial(suite: NodeAlgorithmSuite, encryptionContext: Record<string, string>): NodeEncryptionMaterial {
    const curve = suite.signatureCurve
    if (!curve) return super._initializeEncryptionMaterial(suite, encryptionContext)
    const { scalar, compressPoint } = this.nextKeyPair ?? takeSigningKeyPair(curve)
    this.nextKeyPair = undefined
    try {
      const point = new Uint8Array(compressPoint)
      const signatureKey = new SignatureKey(ecPrivateKeyPem(curve, scalar, point) as unknown as Uint8Array, point, suite)
      return new NodeEncryptionMaterial(suite, { ...encryptionContext, [ENCODED_SIGNER_KEY]: compressPoint.toString('base64') }).setSignatureKey(signatureKey)
    } finally {
      scalar.fill(0)
    }
  }

  override _initializeDecryptionMaterial(suite: NodeAlgorithmSuite, encryptionContext: Record<string, string>): NodeDecryptionMaterial {
    const curve = suite.signatureCurve
    const encoded = curve && encryptionContext ? encryptionContext[ENCODED_SIGNER_KEY] : undefined
    if (!curve || typeof encoded !== 'string' || encoded.length === 0) return super._initializeDecryptionMaterial(suite, encryptionContext)
    let point: Buffer
    try {
      point = ECDH.convertKey(Buffer.from(encoded, 'base64'), curve, undefined, undefined, 'uncompressed') as Buffer
    } catch {
      throw new IntegrityError(`the message's public signing key (${ENCODED_SIGNER_KEY} in its encryption context) is not a point on ${curve}`)
    }
    return new NodeDecryptionMaterial(suite, encryptionContext).setVerificationKey(new VerificationKey(ecPublicKeyPem(curve, point) as unknown as Uint8Array, suite))
  }
}

export interface CachingSettings {
  capacity: number
  /** Seconds, as aws-encryption-cli takes it (the SDK wants milliseconds). */
  max_age: number
  max_messages_encrypted?: number
  max_bytes_encrypted?: number
}

const CACHING_FIELDS = ['capacity', 'max_age', 'max_messages_encrypted', 'max_bytes_encrypted'] as const

/** Parse `--caching capacity=N max_age=SECONDS [max_messages_encrypted=N] [max_bytes_encrypted=N]`. */
export function parseCachingSpec(tokens: readonly string[]): CachingSettings {
  const values: Record<string, number> = {}
  for (const token of tokens) {
    const [name, text] = token.split('=', 2)
    if (!CACHING_FIELDS.includes(name as (typeof CACHING_FIELDS)[number]) || text === undefined) {
      throw new UsageError(`--caching: "${token}" is not one of ${CACHING_FIELDS.map((f) => `${f}=N`).join(', ')}`)
    }
    const value = Number(text)
    if (!Number.isFinite(value) || value <= 0 || (name !== 'max_age' && !Number.isInteger(value))) {
      throw new UsageError(`--caching: ${name} must be a positive ${name === 'max_age' ? 'number of seconds' : 'integer'}, got "${text}"`)
    }
    values[name] = value
  }
  if (values.capacity === undefined || values.max_age === undefined) {
    throw new UsageError('--caching needs capacity=N and max_age=SECONDS')
  }
  return values as unknown as CachingSettings
}

export function buildMaterialsManager(keyring: KeyringNode, caching?: CachingSettings): NodeMaterialsManager {
  if (!caching) return new DefaultMaterialsManager(keyring)
  // Loaded only for --caching, so a run without it does not pay for the cache's modules at start-up (a
  // synchronous require: these are CommonJS packages and this function is synchronous).
  const { NodeCachingMaterialsManager, getLocalCryptographicMaterialsCache } = createRequire(import.meta.url)(
    '@aws-crypto/caching-materials-manager-node',
  ) as typeof import('@aws-crypto/caching-materials-manager-node')
  const cachingManager = new NodeCachingMaterialsManager({
    backingMaterials: new DefaultMaterialsManager(keyring),
    cache: getLocalCryptographicMaterialsCache(caching.capacity),
    maxAge: Math.max(1, Math.round(caching.max_age * 1000)),
    ...(caching.max_messages_encrypted !== undefined ? { maxMessagesEncrypted: caching.max_messages_encrypted } : {}),
    ...(caching.max_bytes_encrypted !== undefined ? { maxBytesEncrypted: caching.max_bytes_encrypted } : {}),
  })
  return serializePerCacheKey(cachingManager)
}

/** Wrap a manager so that requests with the same cache key run one after another. */
function serializePerCacheKey(inner: NodeMaterialsManager): NodeMaterialsManager {
  const tails = new Map<string, Promise<unknown>>()
  function exclusive<T>(key: string, task: () => Promise<T>): Promise<T> {
    const previous = tails.get(key) ?? Promise.resolve()
    const run = previous.then(task, task)
    const tail = run.catch(() => undefined)
    tails.set(key, tail)
    void tail.then(() => {
      if (tails.get(key) === tail) tails.delete(key)
    })
    return run
  }
  const contextKey = (context: Readonly<Record<string, string>>) =>
    JSON.stringify(Object.keys(context).sort().map((k) => [k, context[k]]))
  return {
    getEncryptionMaterials: (request) =>
      exclusive(`e|${request.suite?.id ?? 'default'}|${contextKey(request.encryptionContext)}`, () => inner.getEncryptionMaterials(request)),
    decryptMaterials: (request) => {
      const edks = request.encryptedDataKeys
        .map((edk) => `${edk.providerId}|${edk.providerInfo}|${Buffer.from(edk.encryptedDataKey).toString('base64')}`)
        .sort()
        .join(',')
      return exclusive(`d|${request.suite.id}|${contextKey(request.encryptionContext)}|${edks}`, () => inner.decryptMaterials(request))
    },
  } as NodeMaterialsManager
}
