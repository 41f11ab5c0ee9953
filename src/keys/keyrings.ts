// Every `-w/--wrapping-keys` spec becomes a keyring here, and nowhere else (as age's parse.go).
// Key material is only ever read from files named by `material=file://PATH`, never from argv.
import { existsSync, readFileSync, statSync } from 'node:fs'
import { resolve as resolvePath } from 'node:path'
import { createPrivateKey, createPublicKey, privateDecrypt, randomFillSync, constants as cryptoConstants, type KeyObject } from 'node:crypto'
import { homedir } from 'node:os'
import { createRequire } from 'node:module'
import { KeyringTraceFlag, MultiKeyringNode, type KeyringNode, type NodeEncryptionMaterial } from '@aws-crypto/material-management-node'
import { RawAesKeyringNode, RawAesWrappingSuiteIdentifier } from '@aws-crypto/raw-aes-keyring-node'
import type { KMS } from '@aws-sdk/client-kms'
import { EnvcryptError, UsageError } from '../errors.js'
import { warnAboutKeyFileMode } from './file-mode.js'

type Provider = 'aws-kms' | 'raw-aes' | 'raw-rsa'
type RsaPadding = 'oaep-sha256' | 'oaep-sha1' | 'pkcs1'

export interface WrappingKeySpec {
  provider: Provider
  keys: string[]
  region?: string
  profile?: string
  discovery: boolean
  discoveryAccounts: string[]
  discoveryPartition?: string
  /** Path of the key file (from `material=file://PATH`); raw providers only. */
  materialPath?: string
  namespace: string
  padding: RsaPadding
}

/** KMS calls made by this process, keyed by operation name (`GenerateDataKey`, `Decrypt`, ...). */
export type KmsCallCounts = Record<string, number>

const SPEC_FIELDS = new Set(['key', 'provider', 'region', 'profile', 'discovery', 'discovery-account', 'discovery-partition', 'material', 'namespace', 'padding'])
const REPEATABLE = new Set(['key', 'discovery-account'])
const DEFAULT_NAMESPACE = 'envcrypt'

// The RSA and KMS providers' packages load only when a spec needs them: a raw AES run never loads the AWS SDK's KMS
// client (about a third of a small run's start-up). Synchronous requires of these CommonJS packages keep
// buildKeyring synchronous for the library's callers.
const requireLazily = createRequire(import.meta.url)
const rawRsaPackage = () => requireLazily('@aws-crypto/raw-rsa-keyring-node') as typeof import('@aws-crypto/raw-rsa-keyring-node')
const kmsKeyringPackage = () => requireLazily('@aws-crypto/kms-keyring-node') as typeof import('@aws-crypto/kms-keyring-node')
const kmsClientPackage = () => requireLazily('@aws-sdk/client-kms') as typeof import('@aws-sdk/client-kms')

/** Parse one `-w` group: a list of `name=value` tokens. */
export function parseWrappingKeySpec(tokens: readonly string[]): WrappingKeySpec {
  const values = new Map<string, string[]>()
  for (const token of tokens) {
    const eq = token.indexOf('=')
    if (eq <= 0) throw new UsageError(`-w/--wrapping-keys: "${redact(token)}" is not name=value (names: ${[...SPEC_FIELDS].join(', ')})`)
    const name = token.slice(0, eq).toLowerCase()
    const value = token.slice(eq + 1)
    if (!SPEC_FIELDS.has(name)) throw new UsageError(`-w/--wrapping-keys: unknown field "${name}" (names: ${[...SPEC_FIELDS].join(', ')})`)
    const list = values.get(name) ?? []
    if (list.length > 0 && !REPEATABLE.has(name)) throw new UsageError(`-w/--wrapping-keys: "${name}" given twice in one group`)
    list.push(value)
    values.set(name, list)
  }
  const one = (name: string) => values.get(name)?.[0]
  const provider = (one('provider') ?? 'aws-kms').toLowerCase()
  if (provider !== 'aws-kms' && provider !== 'raw-aes' && provider !== 'raw-rsa') {
    throw new UsageError(`-w/--wrapping-keys: unknown provider "${provider}" (aws-kms, raw-aes or raw-rsa)`)
  }
  const discoveryText = one('discovery')?.toLowerCase()
  if (discoveryText !== undefined && discoveryText !== 'true' && discoveryText !== 'false') {
    throw new UsageError('-w/--wrapping-keys: discovery must be true or false')
  }
  const spec: WrappingKeySpec = {
    provider,
    keys: values.get('key') ?? [],
    region: one('region'),
    profile: one('profile'),
    discovery: discoveryText === 'true',
    discoveryAccounts: values.get('discovery-account') ?? [],
    discoveryPartition: one('discovery-partition'),
    namespace: one('namespace') ?? DEFAULT_NAMESPACE,
    padding: (one('padding')?.toLowerCase() ?? 'oaep-sha256') as RsaPadding,
  }
  if (!['oaep-sha256', 'oaep-sha1', 'pkcs1'].includes(spec.padding)) {
    throw new UsageError(`-w/--wrapping-keys: padding must be oaep-sha256, oaep-sha1 or pkcs1`)
  }
  const material = one('material')
  if (provider === 'aws-kms') {
    for (const field of ['material', 'namespace', 'padding']) {
      if (values.has(field)) throw new UsageError(`-w/--wrapping-keys: "${field}" applies to raw-aes/raw-rsa keys, not aws-kms`)
    }
  } else {
    for (const field of ['region', 'profile', 'discovery', 'discovery-account', 'discovery-partition']) {
      if (values.has(field)) throw new UsageError(`-w/--wrapping-keys: "${field}" applies to aws-kms keys, not ${provider}`)
    }
    if (provider === 'raw-aes' && values.has('padding')) throw new UsageError('-w/--wrapping-keys: "padding" applies to raw-rsa keys only')
    if (spec.keys.length !== 1) throw new UsageError(`-w/--wrapping-keys: ${provider} needs exactly one key=NAME`)
    if (material === undefined) throw new UsageError(`-w/--wrapping-keys: ${provider} needs material=file://PATH`)
    if (!material.startsWith('file://')) throw new UsageError(materialNotFileUrl(material))
    spec.materialPath = expandHome(material.slice('file://'.length))
  }
  if (spec.discoveryAccounts.length > 0 !== (spec.discoveryPartition !== undefined)) {
    throw new UsageError('-w/--wrapping-keys: discovery-account and discovery-partition must be given together')
  }
  if (spec.discoveryAccounts.length > 0 && !spec.discovery) {
    throw new UsageError('-w/--wrapping-keys: discovery-account/discovery-partition need discovery=true')
  }
  return spec
}

function redact(token: string): string {
  return token.length > 40 ? `${token.slice(0, 12)}…` : token
}

function expandHome(path: string): string {
  return path === '~' || path.startsWith('~/') ? homedir() + path.slice(1) : path
}

/** Check the rules that depend on the direction: encrypt needs keys and refuses discovery. */
function validateSpecs(specs: readonly WrappingKeySpec[], mode: 'encrypt' | 'decrypt'): void {
  if (specs.length === 0) throw new UsageError('-w/--wrapping-keys is required: name at least one wrapping key (see --help)')
  for (const spec of specs) {
    if (mode === 'encrypt') {
      if (spec.discovery) throw new UsageError('-w/--wrapping-keys: discovery=true cannot be used to encrypt; name a key=')
      if (spec.keys.length === 0) throw new UsageError('-w/--wrapping-keys: encrypt needs key=... in every group')
    } else {
      if (spec.discovery && spec.keys.length > 0) throw new UsageError('-w/--wrapping-keys: give key=... or discovery=true, not both')
      if (!spec.discovery && spec.keys.length === 0) throw new UsageError('-w/--wrapping-keys: decrypt needs key=... or discovery=true')
    }
  }
}

export interface KeyringOptions extends KmsRunOptions {
  kmsCalls: KmsCallCounts
  warn: (message: string) => void
  /** Extra KMS client settings (tests, benchmarks); endpoint and credentials otherwise come from the standard chain. */
  kmsClientConfig?: Record<string, unknown>
}

/** How a run talks to KMS: the per-attempt timeout, and who hears of an error that will fail every file. */
export interface KmsRunOptions {
  /** Seconds a KMS attempt may take to connect, and to be answered (`--kms-timeout`); default DEFAULT_KMS_TIMEOUT. */
  kmsTimeoutSeconds?: number
  /** Called with an error that will fail every file of the run (no credentials, KMS not answering, ...). */
  onRunWideError?: (err: EnvcryptError) => void
}

/** Seconds per KMS attempt. With 8 attempts and the SDK's backoff (at most ~25 s in all), a KMS that accepts
 *  connections but never answers fails a call within 2 minutes. A KMS call normally takes milliseconds. */
export const DEFAULT_KMS_TIMEOUT = 10
const KMS_MAX_ATTEMPTS = 8

/** `--kms-timeout`, else ENVCRYPT_KMS_TIMEOUT, else the default; a positive number of seconds. */
export function kmsTimeoutSeconds(flag: number | undefined, env = process.env.ENVCRYPT_KMS_TIMEOUT): number {
  const [value, name] = flag !== undefined ? [flag, '--kms-timeout'] : env !== undefined && env !== '' ? [Number(env), 'ENVCRYPT_KMS_TIMEOUT'] : [DEFAULT_KMS_TIMEOUT, '']
  if (!(Number.isFinite(value) && value > 0)) throw new UsageError(`${name} must be a positive number of seconds`)
  return value
}

export interface KeyringSetup {
  keyring: KeyringNode
  /** Closes the KMS clients' connections. */
  dispose(): void
}

export function buildKeyring(specs: readonly WrappingKeySpec[], mode: 'encrypt' | 'decrypt', options: KeyringOptions): KeyringSetup {
  validateSpecs(specs, mode)
  const clients = new Map<string, KMS>()
  const keyrings: KeyringNode[] = []
  // A key KMS refuses (unknown, access denied, disabled) fails every file when every file needs that key: on
  // encrypt, or a decrypt with one named KMS key and nothing else.
  const kmsKeys = specs.flatMap((spec) => (spec.provider === 'aws-kms' ? spec.keys : []))
  const keyErrorsRunWide = mode === 'encrypt' || (specs.length === 1 && !specs[0]!.discovery && kmsKeys.length === 1)
  const pkcs1Refused: WrappingKeySpec[] = []
  for (const spec of specs) {
    if (spec.provider === 'raw-aes') keyrings.push(rawAesKeyring(spec, options))
    else if (spec.provider === 'raw-rsa') keyrings.push(rawRsaKeyring(spec, mode, options, pkcs1Refused))
    else keyrings.push(...kmsKeyrings(spec, keyrings.length === 0 && mode === 'encrypt', kmsClientProvider(spec, { ...options, keyErrorsRunWide }, clients)))
  }
  if (pkcs1Refused.length) {
    // Said once per run, with the way out, instead of every file failing with "no wrapping key could decrypt".
    if (pkcs1Refused.length === specs.length) throw new EnvcryptError(PKCS1_REFUSED)
    options.warn(`${PKCS1_REFUSED}; the other keys are tried`)
  }
  const keyring = keyrings.length === 1
    ? keyrings[0]
    : mode === 'encrypt'
      ? new MultiKeyringNode({ generator: keyrings[0], children: keyrings.slice(1) })
      : new MultiKeyringNode({ children: keyrings })
  return {
    keyring,
    dispose() {
      for (const client of clients.values()) client.destroy()
      clients.clear()
    },
  }
}

/** A `material=` value without `file://`: a path gets the spelling that works; anything else may be the key
 *  itself, which is never echoed. A value is shown only when it cannot be base64 or hex key material (./ ../ ~/,
 *  or a / path with a dot in it) or names an existing file. */
function materialNotFileUrl(material: string): string {
  const looksLikePath = /^(\.{1,2}\/|~\/)/.test(material) || (material.startsWith('/') && (material.includes('.') || existsSync(material)))
  if (looksLikePath) {
    const absolute = resolvePath(expandHome(material))
    return `-w/--wrapping-keys: material=${material}: a key file is named as a URL; write material=file://${absolute}`
  }
  return '-w/--wrapping-keys: material must be file://PATH (e.g. material=file:///home/me/key.bin); key material is never accepted on the command line'
}

function readKeyFile(spec: WrappingKeySpec, options: KeyringOptions): Buffer {
  const path = spec.materialPath!
  try {
    const mode = statSync(path).mode
    const content = readFileSync(path)
    // Decided by content, not direction: a raw AES key or a PEM holding a private key is a secret; a public
    // PEM is meant to be shared, but must not be replaceable by others.
    const secret = spec.provider === 'raw-aes' || /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/.test(content.toString('latin1'))
    warnAboutKeyFileMode(path, mode, secret, options.warn)
    return content
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    throw new UsageError(`-w/--wrapping-keys: cannot read key file ${path} (${code ?? 'error'})`)
  }
}

// Data keys for the raw AES keyring, filled 64 at a time and each zeroed in the pool once handed out.
const dataKeyPool = Buffer.alloc(64 * 32)
let dataKeyPoolLeft = 0
function freshDataKey(length: number): Uint8Array {
  if (dataKeyPoolLeft < length) {
    randomFillSync(dataKeyPool)
    dataKeyPoolLeft = dataKeyPool.length
  }
  dataKeyPoolLeft -= length
  const slot = dataKeyPool.subarray(dataKeyPoolLeft, dataKeyPoolLeft + length)
  const key = new Uint8Array(slot)
  slot.fill(0)
  return key
}

/** The SDK's raw AES keyring, except that it makes a data key with a synchronous random fill: the SDK's
 *  `randomBytes(n, callback)` costs the main thread a thread-pool round trip per message, several times
 *  the 32 random bytes. Same trace and wrapping (`_wrapKey` is the SDK's). */
class RawAesKeyring extends RawAesKeyringNode {
  override _onEncrypt = async function (this: RawAesKeyring, material: NodeEncryptionMaterial): Promise<NodeEncryptionMaterial> {
    if (!material.hasUnencryptedDataKey) {
      const trace = { keyName: this.keyName, keyNamespace: this.keyNamespace, flags: KeyringTraceFlag.WRAPPING_KEY_GENERATED_DATA_KEY }
      material.setUnencryptedDataKey(freshDataKey(material.suite.keyLengthBytes), trace)
    }
    return this._wrapKey(material)
  }
}

function rawAesKeyring(spec: WrappingKeySpec, options: KeyringOptions): KeyringNode {
  const material = readKeyFile(spec, options)
  const wrappingSuite = {
    16: RawAesWrappingSuiteIdentifier.AES128_GCM_IV12_TAG16_NO_PADDING,
    24: RawAesWrappingSuiteIdentifier.AES192_GCM_IV12_TAG16_NO_PADDING,
    32: RawAesWrappingSuiteIdentifier.AES256_GCM_IV12_TAG16_NO_PADDING,
  }[material.length]
  if (!wrappingSuite) {
    throw new UsageError(`-w/--wrapping-keys: key file ${spec.materialPath} holds ${material.length} bytes; a raw AES key is 16, 24 or 32 raw bytes (make one with: envcrypt keygen --out PATH)`)
  }
  return new RawAesKeyring({
    keyName: spec.keys[0],
    keyNamespace: spec.namespace,
    unencryptedMasterKey: new Uint8Array(material),
    wrappingSuite,
  })
}

/** The flag that re-runs envcrypt under `node --security-revert=CVE-2023-46809` (src/cli/security-revert.ts). */
const PKCS1_FLAG = '--allow-pkcs1-decrypt'
const PKCS1_REFUSED = `padding=pkcs1: this Node.js (${process.version}) refuses PKCS#1 v1.5 RSA decryption (CVE-2023-46809, the Marvin attack), so messages wrapped with it cannot be opened; to move them to OAEP, run once: envcrypt reencrypt ${PKCS1_FLAG} -W provider=raw-rsa ... padding=pkcs1 -w ... padding=oaep-sha256`

/** Whether this Node refuses PKCS#1 v1.5 private decryption (Node 20 does unless started with the security
 *  revert): it says so before looking at the data. */
function refusesPkcs1Decrypt(key: KeyObject): boolean {
  try {
    privateDecrypt({ key, padding: cryptoConstants.RSA_PKCS1_PADDING }, Buffer.alloc((key.asymmetricKeyDetails?.modulusLength ?? 2048) / 8))
    return false
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ERR_INVALID_ARG_VALUE' && /RSA_PKCS1_PADDING/.test((err as Error).message)
  }
}

function rawRsaKeyring(spec: WrappingKeySpec, mode: 'encrypt' | 'decrypt', options: KeyringOptions, pkcs1Refused: WrappingKeySpec[]): KeyringNode {
  const pem = readKeyFile(spec, options)
  let privateKey: string | undefined
  let publicKey: string
  try {
    const key = createPrivateKey(pem)
    if (mode === 'decrypt' && spec.padding === 'pkcs1' && refusesPkcs1Decrypt(key)) pkcs1Refused.push(spec)
    privateKey = key.export({ type: 'pkcs8', format: 'pem' }).toString()
    publicKey = createPublicKey(key).export({ type: 'spki', format: 'pem' }).toString()
  } catch {
    try {
      publicKey = createPublicKey(pem).export({ type: 'spki', format: 'pem' }).toString()
    } catch {
      throw new UsageError(`-w/--wrapping-keys: key file ${spec.materialPath} is not a PEM RSA key`)
    }
  }
  if (mode === 'decrypt' && !privateKey) {
    throw new UsageError(`-w/--wrapping-keys: key file ${spec.materialPath} holds only a public key; decrypt needs the private key`)
  }
  const { RawRsaKeyringNode } = rawRsaPackage()
  const padding = spec.padding === 'pkcs1' ? cryptoConstants.RSA_PKCS1_PADDING : cryptoConstants.RSA_PKCS1_OAEP_PADDING
  return new RawRsaKeyringNode({
    keyName: spec.keys[0],
    keyNamespace: spec.namespace,
    rsaKey: { publicKey, privateKey },
    padding,
    oaepHash: spec.padding === 'oaep-sha1' ? 'sha1' : spec.padding === 'oaep-sha256' ? 'sha256' : undefined,
  })
}

/** One KMS client per (region, profile), shared by every keyring, each counting the calls it makes.
 *  The SDK's own `cacheClients` may build several clients before the first answer, so we cache here. */
function kmsClientProvider(spec: WrappingKeySpec, options: KeyringOptions & { keyErrorsRunWide: boolean }, kmsClients: Map<string, KMS>): (region: string) => KMS {
  return (region: string) => {
    const effectiveRegion = region || spec.region || undefined
    const cacheKey = `${effectiveRegion ?? ''}\u0000${spec.profile ?? ''}`
    let client = kmsClients.get(cacheKey)
    if (!client) {
      client = createKmsClient({ ...options, region: effectiveRegion, profile: spec.profile })
      kmsClients.set(cacheKey, client)
    }
    return client
  }
}

/** A KMS client from the standard chain (endpoint, credentials, region), counting the calls KMS answered into
 *  `kmsCalls`, with connect and answer timeouts. Used for the wrapping keys and by `migrate` to unwrap legacy
 *  data keys. Errors that will fail every file become one EnvcryptError, reported to `onRunWideError`. */
export function createKmsClient(options: KmsRunOptions & { region?: string; profile?: string; kmsCalls: KmsCallCounts; kmsClientConfig?: Record<string, unknown>; keyErrorsRunWide?: boolean }): KMS {
  const { KMS } = kmsClientPackage()
  const timeoutMs = (options.kmsTimeoutSeconds ?? DEFAULT_KMS_TIMEOUT) * 1000
  const client = new KMS({
    ...(options.region ? { region: options.region } : {}),
    ...(options.profile ? { profile: options.profile } : {}),
    // Throttling, 5xx and timeouts are retried by the SDK's standard strategy (exponential backoff with
    // jitter); more attempts than the default 3 keep a busy account's batch from failing on a burst.
    maxAttempts: KMS_MAX_ATTEMPTS,
    // Without timeouts a KMS that accepts connections but never answers holds the run for ever.
    requestHandler: { connectionTimeout: timeoutMs, requestTimeout: timeoutMs, throwOnRequestTimeout: true, socketTimeout: timeoutMs },
    ...options.kmsClientConfig,
  })
  watchCalls(client, options, timeoutMs / 1000)
  return client
}

/** Errors about the caller or the endpoint, not about one message: every file would fail the same way. */
const CREDENTIAL_ERRORS = new Set(['CredentialsProviderError', 'UnrecognizedClientException', 'InvalidSignatureException', 'ExpiredTokenException', 'IncompleteSignature', 'InvalidClientTokenId'])
const KEY_ERRORS = new Set(['NotFoundException', 'AccessDeniedException', 'DisabledException', 'KMSInvalidStateException', 'InvalidKeyUsageException'])
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EPIPE'])

/** The one-line run-wide error for `err`, or undefined when it concerns only this call. */
function runWideKmsError(err: unknown, timeoutSeconds: number, keyErrorsRunWide: boolean): EnvcryptError | undefined {
  const e = err as { name?: string; code?: string; message?: string; $metadata?: { attempts?: number; httpStatusCode?: number } }
  const attempts = e.$metadata?.attempts ?? KMS_MAX_ATTEMPTS
  const answered = e.$metadata?.httpStatusCode !== undefined
  const detail = (e.message ?? '').split('\n')[0]
  if (!answered && (e.name === 'TimeoutError' || e.code === 'ETIMEDOUT' || /timed? ?out/i.test(detail))) {
    return new EnvcryptError(`KMS did not answer within ${timeoutSeconds} s (${attempts} attempts); check the endpoint, or raise --kms-timeout / ENVCRYPT_KMS_TIMEOUT`)
  }
  if (!answered && e.code && NETWORK_CODES.has(e.code)) return new EnvcryptError(`KMS could not be reached (${e.code}, ${attempts} attempts)`)
  if (e.name && CREDENTIAL_ERRORS.has(e.name)) return new EnvcryptError(`KMS refused the credentials or none were found (${e.name}: ${detail})`)
  if (keyErrorsRunWide && e.name && KEY_ERRORS.has(e.name)) return new EnvcryptError(`KMS refused the key (${e.name}: ${detail})`)
  return undefined
}

function watchCalls(client: KMS, options: KmsRunOptions & { kmsCalls: KmsCallCounts; keyErrorsRunWide?: boolean }, timeoutSeconds: number): void {
  const counts = options.kmsCalls
  const count = (operation: string) => (counts[operation] = (counts[operation] ?? 0) + 1)
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const operation = String(context.commandName ?? 'Unknown').replace(/Command$/, '')
      try {
        const result = await next(args)
        count(operation)
        return result
      } catch (err) {
        // Only calls KMS answered count (a refusal too); one that never reached it does not.
        if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode !== undefined) count(operation)
        const runWide = runWideKmsError(err, timeoutSeconds, options.keyErrorsRunWide ?? true)
        if (!runWide) throw err
        options.onRunWideError?.(runWide)
        throw runWide
      }
    },
    { step: 'initialize', name: 'envcryptCountKmsCalls' },
  )
}

function kmsKeyrings(spec: WrappingKeySpec, firstGeneratesDataKey: boolean, provider: (region: string) => KMS): KeyringNode[] {
  const { KmsKeyringNode } = kmsKeyringPackage()
  const clientProvider = provider as any
  if (spec.discovery) {
    const discoveryFilter = spec.discoveryAccounts.length > 0
      ? { accountIDs: spec.discoveryAccounts, partition: spec.discoveryPartition! }
      : undefined
    return [new KmsKeyringNode({ discovery: true, discoveryFilter, clientProvider })]
  }
  const [first, ...rest] = spec.keys
  return [
    firstGeneratesDataKey
      ? new KmsKeyringNode({ generatorKeyId: first, keyIds: rest, clientProvider })
      : new KmsKeyringNode({ keyIds: spec.keys, clientProvider }),
  ]
}
