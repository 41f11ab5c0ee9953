/**
 * A small KMS-compatible endpoint (JSON 1.1 protocol) for tests, demos and benchmarks.
 *
 * No KMS emulator is installable on the build machines, so this speaks just enough of
 * TrentService for the AWS SDK, `KmsKeyringNode` and envcrypt itself: symmetric keys,
 * aliases, data keys, Encrypt/Decrypt/ReEncrypt and key state changes. Ciphertext blobs
 * are real AES-256-GCM under per-key secret material, with the key id and the encryption
 * context bound as AAD, so a wrong context, a wrong key or a tampered blob fails the way
 * it does against AWS. SigV4 signatures are parsed but not verified.
 */
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { createCipheriv, createDecipheriv, randomBytes, randomUUID } from 'node:crypto'
import { promises as fs } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'

export interface LocalKmsOptions {
  /** 0 (the default) picks a free port. */
  port?: number
  /** Default 127.0.0.1. */
  host?: string
  /** Default us-east-1, or the region recorded in `stateFile`. */
  region?: string
  /** Default '111122223333', or the account recorded in `stateFile`. */
  accountId?: string
  /** Keys and aliases are loaded from here on start and written (atomically, mode 0600) after every change. */
  stateFile?: string
  /** Fixed delay added to every request before it is answered. */
  latencyMs?: number
  /** Fraction (0..1) of requests answered with HTTP 400 ThrottlingException. */
  throttleRate?: number
  /** Fraction (0..1) of requests answered with HTTP 500 KMSInternalException (a transient server fault). */
  serverErrorRate?: number
  /** Seed for the throttling and server-error decisions, so a run is reproducible (default 1). */
  throttleSeed?: number
  /** One line per request and lifecycle event; never receives plaintext or key material. */
  log?: (line: string) => void
}

export interface LocalKms {
  /** http://HOST:PORT */
  endpoint: string
  region: string
  /** Creates an enabled symmetric key and returns its ARN. */
  createKey(description?: string): Promise<string>
  /** Accepts a key id, key ARN, alias name or alias ARN. */
  setKeyEnabled(keyArn: string, enabled: boolean): void
  /**
   * Requests answered per operation (including those answered with an error), plus
   * `Throttled`/`ServerError`: requests refused by fault injection (not counted under their operation).
   */
  counts(): Record<string, number>
  /** The most requests that were being handled at one moment (received, not yet answered) since the last
   *  resetCounts(): shows whether concurrent clients are served concurrently. */
  peakConcurrentRequests(): number
  resetCounts(): void
  /** Stops listening, drops keep-alive connections and waits for pending state-file writes. */
  close(): Promise<void>
}

/** The environment a child process (the CLI) needs to reach `kms` the standard way: its endpoint, its region,
 *  and placeholder credentials (the endpoint checks their shape, not their value); no profile is read. */
export function localKmsEnv(kms: Pick<LocalKms, 'endpoint' | 'region'>): Record<string, string> {
  return {
    AWS_ENDPOINT_URL_KMS: kms.endpoint,
    AWS_REGION: kms.region,
    AWS_ACCESS_KEY_ID: 'AKIDLOCALKMS',
    AWS_SECRET_ACCESS_KEY: 'local-kms-placeholder-secret',
    AWS_PROFILE: '',
  }
}

const JSON_CONTENT_TYPE = 'application/x-amz-json-1.1'
const TARGET_PREFIX = 'TrentService.'
const MAX_REQUEST_BYTES = 1024 * 1024
const STATE_FORMAT = 'envcrypt-local-kms/1'

// Blob layout: version (1) | key UUID (16) | IV (12) | AES-256-GCM ciphertext | tag (16).
const BLOB_VERSION = 0x01
const BLOB_HEADER_BYTES = 1 + 16
const IV_BYTES = 12
const TAG_BYTES = 16
const AAD_DOMAIN = Buffer.from('envcrypt-local-kms blob v1\0', 'utf8')

const SYMMETRIC_DEFAULT = 'SYMMETRIC_DEFAULT'
const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
const ALIAS_NAME_PATTERN = /^alias\/[a-zA-Z0-9:/_-]+$/
const SIGV4_AUTHORIZATION =
  /^AWS4-HMAC-SHA256 Credential=[^/\s,]+\/\d{8}\/([a-z0-9-]+)\/([a-z0-9-]+)\/aws4_request,\s*SignedHeaders=[a-z0-9;-]+,\s*Signature=[0-9a-f]{64}$/

type KeyState = 'Enabled' | 'Disabled' | 'PendingDeletion'

interface KeyRecord {
  keyId: string
  material: Buffer
  description: string
  creationDate: number
  state: KeyState
  deletionDate?: number
  pendingWindowInDays?: number
}

interface AliasRecord {
  aliasName: string
  targetKeyId: string
  creationDate: number
  lastUpdatedDate: number
}

type JsonObject = Record<string, unknown>
type EncryptionContext = Record<string, string>

/** A KMS error as it goes on the wire: `__type` name, message and HTTP status. */
class KmsError extends Error {
  constructor(
    readonly type: string,
    message: string,
    readonly status = 400,
  ) {
    super(message)
  }
}

interface OperationResult {
  body: JsonObject
  /** True when keys or aliases changed and the state file must be rewritten. */
  mutated: boolean
}

const nowSeconds = (): number => Date.now() / 1000

/** mulberry32: tiny, seedable, good enough to decide which requests to throttle. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function uuidToBytes(uuid: string): Buffer {
  return Buffer.from(uuid.replace(/-/g, ''), 'hex')
}

function bytesToUuid(bytes: Buffer): string {
  const hex = bytes.toString('hex')
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`
}

/** Sorted by UTF-8 bytes so the same context always yields the same AAD, whatever the key order on the wire. */
function canonicalContext(context: EncryptionContext): Buffer {
  const entries = Object.entries(context).sort(([a], [b]) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
  return Buffer.from(JSON.stringify(entries), 'utf8')
}

function blobAad(header: Buffer, context: EncryptionContext): Buffer {
  return Buffer.concat([AAD_DOMAIN, header, canonicalContext(context)])
}

function sealBlob(key: KeyRecord, plaintext: Buffer, context: EncryptionContext): Buffer {
  const header = Buffer.concat([Buffer.from([BLOB_VERSION]), uuidToBytes(key.keyId)])
  const iv = randomBytes(IV_BYTES)
  const cipher = createCipheriv('aes-256-gcm', key.material, iv)
  cipher.setAAD(blobAad(header, context))
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()])
  return Buffer.concat([header, iv, ciphertext, cipher.getAuthTag()])
}

/** The key id a blob claims; the claim is only trusted once the tag verifies. */
function blobKeyId(blob: Buffer): string {
  if (blob.length < BLOB_HEADER_BYTES + IV_BYTES + 1 + TAG_BYTES || blob[0] !== BLOB_VERSION) {
    throw new KmsError('InvalidCiphertextException', 'The ciphertext is not a valid ciphertext blob.')
  }
  return bytesToUuid(blob.subarray(1, BLOB_HEADER_BYTES))
}

function openBlob(key: KeyRecord, blob: Buffer, context: EncryptionContext): Buffer {
  const header = blob.subarray(0, BLOB_HEADER_BYTES)
  const iv = blob.subarray(BLOB_HEADER_BYTES, BLOB_HEADER_BYTES + IV_BYTES)
  const ciphertext = blob.subarray(BLOB_HEADER_BYTES + IV_BYTES, blob.length - TAG_BYTES)
  const tag = blob.subarray(blob.length - TAG_BYTES)
  try {
    const decipher = createDecipheriv('aes-256-gcm', key.material, iv)
    decipher.setAAD(blobAad(header, context))
    decipher.setAuthTag(tag)
    return Buffer.concat([decipher.update(ciphertext), decipher.final()])
  } catch {
    // Wrong context, tampered bytes and a blob re-labelled with another key all land here, as on AWS.
    throw new KmsError('InvalidCiphertextException', 'The ciphertext or encryption context is invalid.')
  }
}

// ---------------------------------------------------------------------------------------------
// Input validation: every field is checked before use, with ValidationException like the service.

function validation(message: string): KmsError {
  return new KmsError('ValidationException', message)
}

function optionalString(input: JsonObject, name: string, min = 1, max = 2048): string | undefined {
  const value = input[name]
  if (value === undefined || value === null) return undefined
  if (typeof value !== 'string') throw validation(`${name} must be a string.`)
  if (value.length < min || value.length > max) {
    throw validation(`${name} must have length between ${min} and ${max}.`)
  }
  return value
}

function requiredString(input: JsonObject, name: string, min = 1, max = 2048): string {
  const value = optionalString(input, name, min, max)
  if (value === undefined) throw validation(`${name} is required.`)
  return value
}

function optionalInteger(input: JsonObject, name: string, min: number, max: number): number | undefined {
  const value = input[name]
  if (value === undefined || value === null) return undefined
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw validation(`${name} must be an integer between ${min} and ${max}.`)
  }
  return value
}

function requiredBlob(input: JsonObject, name: string, min: number, max: number): Buffer {
  const value = input[name]
  if (value === undefined || value === null) throw validation(`${name} is required.`)
  // Buffer.from(..., 'base64') silently skips junk, so check the alphabet first.
  if (typeof value !== 'string' || value.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(value)) {
    throw new KmsError('SerializationException', `${name} must be base64.`)
  }
  const bytes = Buffer.from(value, 'base64')
  if (bytes.length < min || bytes.length > max) {
    throw validation(`${name} must be between ${min} and ${max} bytes.`)
  }
  return bytes
}

function encryptionContextOf(input: JsonObject, name: string): EncryptionContext {
  const value = input[name]
  if (value === undefined || value === null) return {}
  if (typeof value !== 'object' || Array.isArray(value)) throw validation(`${name} must be a map of strings.`)
  const context: EncryptionContext = {}
  for (const [key, entry] of Object.entries(value)) {
    if (typeof entry !== 'string') throw validation(`${name} values must be strings.`)
    context[key] = entry
  }
  return context
}

function checkEncryptionAlgorithm(input: JsonObject, name: string): void {
  const algorithm = optionalString(input, name)
  if (algorithm !== undefined && algorithm !== SYMMETRIC_DEFAULT) {
    throw validation(`${name} ${algorithm} is not supported by a symmetric key.`)
  }
}

function dataKeyLength(input: JsonObject): number {
  const keySpec = optionalString(input, 'KeySpec')
  const numberOfBytes = optionalInteger(input, 'NumberOfBytes', 1, 1024)
  if (keySpec !== undefined && numberOfBytes !== undefined) {
    throw validation('Specify either KeySpec or NumberOfBytes, not both.')
  }
  if (keySpec === 'AES_256') return 32
  if (keySpec === 'AES_128') return 16
  if (keySpec !== undefined) throw validation(`KeySpec ${keySpec} is not one of AES_256, AES_128.`)
  if (numberOfBytes === undefined) throw validation('Specify either KeySpec or NumberOfBytes.')
  return numberOfBytes
}

// ---------------------------------------------------------------------------------------------

async function writeFileAtomic(file: string, data: string): Promise<void> {
  const temporary = `${file}.${process.pid}.${randomUUID()}.tmp`
  try {
    const handle = await fs.open(temporary, 'wx', 0o600)
    try {
      await handle.writeFile(data, 'utf8')
      await handle.sync()
    } finally {
      await handle.close()
    }
    await fs.rename(temporary, file)
  } catch (error) {
    await fs.rm(temporary, { force: true }).catch(() => undefined)
    throw error
  }
}

interface StateFileContents {
  format: string
  region: string
  accountId: string
  keys: Array<{
    KeyId: string
    Material: string
    Description: string
    CreationDate: number
    KeyState: KeyState
    DeletionDate?: number
    PendingWindowInDays?: number
  }>
  aliases: Array<{ AliasName: string; TargetKeyId: string; CreationDate: number; LastUpdatedDate: number }>
}

async function readStateFile(file: string): Promise<StateFileContents | undefined> {
  let text: string
  try {
    text = await fs.readFile(file, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw error
  }
  // A corrupt state file is an error, not an empty start: overwriting it would lose keys.
  const parsed = JSON.parse(text) as StateFileContents
  if (parsed?.format !== STATE_FORMAT || !Array.isArray(parsed.keys) || !Array.isArray(parsed.aliases)) {
    throw new Error(`${file} is not a local-kms state file (expected format ${STATE_FORMAT})`)
  }
  for (const key of parsed.keys) {
    if (!UUID_PATTERN.test(key.KeyId) || Buffer.from(key.Material, 'base64').length !== 32) {
      throw new Error(`${file} has a malformed key entry`)
    }
  }
  return parsed
}

export async function startLocalKms(options: LocalKmsOptions = {}): Promise<LocalKms> {
  const log = options.log ?? (() => undefined)
  const latencyMs = options.latencyMs ?? 0
  const throttleRate = options.throttleRate ?? 0
  if (!(latencyMs >= 0)) throw new Error(`latencyMs must be >= 0, got ${latencyMs}`)
  if (!(throttleRate >= 0 && throttleRate <= 1)) throw new Error(`throttleRate must be within 0..1, got ${throttleRate}`)
  const serverErrorRate = options.serverErrorRate ?? 0
  if (!(serverErrorRate >= 0 && serverErrorRate <= 1)) throw new Error(`serverErrorRate must be within 0..1, got ${serverErrorRate}`)

  const keys = new Map<string, KeyRecord>()
  const aliases = new Map<string, AliasRecord>()
  const saved = options.stateFile ? await readStateFile(options.stateFile) : undefined
  const region = options.region ?? saved?.region ?? 'us-east-1'
  const accountId = options.accountId ?? saved?.accountId ?? '111122223333'
  if (saved) {
    // Messages record key ARNs, so silently re-homing keys to another region or account would break them.
    if (saved.region !== region || saved.accountId !== accountId) {
      throw new Error(
        `${options.stateFile} holds keys for ${saved.region}/${saved.accountId}, not ${region}/${accountId}`,
      )
    }
    for (const key of saved.keys) {
      keys.set(key.KeyId, {
        keyId: key.KeyId,
        material: Buffer.from(key.Material, 'base64'),
        description: key.Description,
        creationDate: key.CreationDate,
        state: key.KeyState,
        deletionDate: key.DeletionDate,
        pendingWindowInDays: key.PendingWindowInDays,
      })
    }
    for (const alias of saved.aliases) {
      aliases.set(alias.AliasName, {
        aliasName: alias.AliasName,
        targetKeyId: alias.TargetKeyId,
        creationDate: alias.CreationDate,
        lastUpdatedDate: alias.LastUpdatedDate,
      })
    }
    log(`local-kms: loaded ${keys.size} keys and ${aliases.size} aliases from ${options.stateFile}`)
  }

  const keyArn = (keyId: string): string => `arn:aws:kms:${region}:${accountId}:key/${keyId}`
  const aliasArn = (aliasName: string): string => `arn:aws:kms:${region}:${accountId}:${aliasName}`

  let callCounts: Record<string, number> = {}
  let concurrentRequests = 0
  let peakConcurrentRequests = 0
  const countCall = (name: string): void => {
    callCounts[name] = (callCounts[name] ?? 0) + 1
  }
  const faultRandom = seededRandom(options.throttleSeed ?? 1)
  const shouldThrottle = () => throttleRate > 0 && faultRandom() < throttleRate
  const shouldFail = () => serverErrorRate > 0 && faultRandom() < serverErrorRate

  // Writes are chained so an older snapshot can never be renamed over a newer one.
  let persistChain: Promise<void> = Promise.resolve()
  const persist = (): Promise<void> => {
    const stateFile = options.stateFile
    if (!stateFile) return Promise.resolve()
    const snapshot: StateFileContents = {
      format: STATE_FORMAT,
      region,
      accountId,
      keys: [...keys.values()].map((key) => ({
        KeyId: key.keyId,
        Material: key.material.toString('base64'),
        Description: key.description,
        CreationDate: key.creationDate,
        KeyState: key.state,
        DeletionDate: key.deletionDate,
        PendingWindowInDays: key.pendingWindowInDays,
      })),
      aliases: [...aliases.values()].map((alias) => ({
        AliasName: alias.aliasName,
        TargetKeyId: alias.targetKeyId,
        CreationDate: alias.creationDate,
        LastUpdatedDate: alias.lastUpdatedDate,
      })),
    }
    const data = JSON.stringify(snapshot, null, 2) + '\n'
    const write = persistChain.then(() => writeFileAtomic(stateFile, data))
    persistChain = write.catch(() => undefined)
    return write
  }

  /** Resolves a key id, key ARN, alias name or alias ARN to a key, whatever its state. */
  const resolveKey = (reference: string): KeyRecord => {
    let id = reference
    if (id.startsWith('arn:')) {
      const match = /^arn:aws:kms:([^:]+):([^:]+):(key\/|alias\/)(.+)$/.exec(id)
      if (!match) throw new KmsError('NotFoundException', `Invalid arn ${reference}`)
      const [, arnRegion, arnAccount, kind, name] = match
      if (arnRegion !== region || arnAccount !== accountId) {
        throw new KmsError('NotFoundException', `Key '${reference}' does not exist`)
      }
      id = kind === 'alias/' ? `alias/${name}` : (name as string)
    }
    if (id.startsWith('alias/')) {
      const alias = aliases.get(id)
      if (!alias) throw new KmsError('NotFoundException', `Alias ${aliasArn(id)} is not found.`)
      id = alias.targetKeyId
    }
    const key = keys.get(id)
    if (!key) throw new KmsError('NotFoundException', `Key '${keyArn(id)}' does not exist`)
    return key
  }

  /** A key that may be used for cryptographic operations. */
  const usableKey = (key: KeyRecord): KeyRecord => {
    if (key.state === 'Disabled') throw new KmsError('DisabledException', `${keyArn(key.keyId)} is disabled.`)
    if (key.state === 'PendingDeletion') {
      throw new KmsError('KMSInvalidStateException', `${keyArn(key.keyId)} is pending deletion.`)
    }
    return key
  }

  const keyMetadata = (key: KeyRecord): JsonObject => ({
    AWSAccountId: accountId,
    KeyId: key.keyId,
    Arn: keyArn(key.keyId),
    CreationDate: key.creationDate,
    Enabled: key.state === 'Enabled',
    Description: key.description,
    KeyUsage: 'ENCRYPT_DECRYPT',
    KeyState: key.state,
    ...(key.deletionDate !== undefined ? { DeletionDate: key.deletionDate } : {}),
    ...(key.pendingWindowInDays !== undefined ? { PendingDeletionWindowInDays: key.pendingWindowInDays } : {}),
    Origin: 'AWS_KMS',
    KeyManager: 'CUSTOMER',
    CustomerMasterKeySpec: SYMMETRIC_DEFAULT,
    KeySpec: SYMMETRIC_DEFAULT,
    EncryptionAlgorithms: [SYMMETRIC_DEFAULT],
    MultiRegion: false,
  })

  const newKey = (description: string): KeyRecord => {
    const key: KeyRecord = {
      keyId: randomUUID(),
      material: randomBytes(32),
      description,
      creationDate: nowSeconds(),
      state: 'Enabled',
    }
    keys.set(key.keyId, key)
    return key
  }

  /** Pagination shared by ListKeys and ListAliases: Marker is the offset of the next item. */
  const page = <T>(input: JsonObject, items: T[]): { items: T[]; more: JsonObject } => {
    const limit = optionalInteger(input, 'Limit', 1, 1000) ?? 100
    const marker = optionalString(input, 'Marker', 1, 1024)
    const start = marker === undefined ? 0 : Number(marker)
    if (!Number.isInteger(start) || start < 0 || start > items.length) {
      throw new KmsError('InvalidMarkerException', 'The marker is invalid.')
    }
    const end = start + limit
    const truncated = end < items.length
    return { items: items.slice(start, end), more: truncated ? { Truncated: true, NextMarker: String(end) } : { Truncated: false } }
  }

  const decryptBlob = (
    input: JsonObject,
    blobField: string,
    keyField: string,
    contextField: string,
  ): { key: KeyRecord; plaintext: Buffer } => {
    const blob = requiredBlob(input, blobField, 1, 6144)
    const requestedKey = optionalString(input, keyField)
    const context = encryptionContextOf(input, contextField)
    const claimedKeyId = blobKeyId(blob)
    if (requestedKey !== undefined) {
      const requested = resolveKey(requestedKey)
      if (requested.keyId !== claimedKeyId) {
        throw new KmsError(
          'IncorrectKeyException',
          'The key ID in the request does not identify a KMS key that can perform this operation.',
        )
      }
    }
    const key = keys.get(claimedKeyId)
    // A blob naming a key this server never had cannot be authenticated at all.
    if (!key) throw new KmsError('InvalidCiphertextException', 'The ciphertext refers to an unknown key.')
    usableKey(key)
    return { key, plaintext: openBlob(key, blob, context) }
  }

  const operations: Record<string, (input: JsonObject) => OperationResult> = {
    CreateKey(input) {
      const keySpec = optionalString(input, 'KeySpec') ?? optionalString(input, 'CustomerMasterKeySpec') ?? SYMMETRIC_DEFAULT
      if (keySpec !== SYMMETRIC_DEFAULT) throw validation(`KeySpec ${keySpec} is not supported here; only ${SYMMETRIC_DEFAULT}.`)
      const keyUsage = optionalString(input, 'KeyUsage') ?? 'ENCRYPT_DECRYPT'
      if (keyUsage !== 'ENCRYPT_DECRYPT') throw validation(`KeyUsage ${keyUsage} is not supported for ${SYMMETRIC_DEFAULT}.`)
      const origin = optionalString(input, 'Origin') ?? 'AWS_KMS'
      if (origin !== 'AWS_KMS') throw validation(`Origin ${origin} is not supported here.`)
      const description = optionalString(input, 'Description', 0, 8192) ?? ''
      return { body: { KeyMetadata: keyMetadata(newKey(description)) }, mutated: true }
    },

    DescribeKey(input) {
      return { body: { KeyMetadata: keyMetadata(resolveKey(requiredString(input, 'KeyId'))) }, mutated: false }
    },

    ListKeys(input) {
      const { items, more } = page(input, [...keys.values()])
      return { body: { Keys: items.map((key) => ({ KeyId: key.keyId, KeyArn: keyArn(key.keyId) })), ...more }, mutated: false }
    },

    CreateAlias(input) {
      const aliasName = requiredString(input, 'AliasName', 1, 256)
      if (!ALIAS_NAME_PATTERN.test(aliasName)) {
        throw validation(`AliasName ${aliasName} must match ${ALIAS_NAME_PATTERN.source}.`)
      }
      if (aliasName.startsWith('alias/aws/')) throw validation('Alias names starting with alias/aws/ are reserved.')
      const target = resolveKey(requiredString(input, 'TargetKeyId'))
      if (target.state === 'PendingDeletion') {
        throw new KmsError('KMSInvalidStateException', `${keyArn(target.keyId)} is pending deletion.`)
      }
      if (aliases.has(aliasName)) throw new KmsError('AlreadyExistsException', `An alias with the name ${aliasArn(aliasName)} already exists`)
      const now = nowSeconds()
      aliases.set(aliasName, { aliasName, targetKeyId: target.keyId, creationDate: now, lastUpdatedDate: now })
      return { body: {}, mutated: true }
    },

    DeleteAlias(input) {
      const aliasName = requiredString(input, 'AliasName', 1, 256)
      if (!aliases.delete(aliasName)) throw new KmsError('NotFoundException', `Alias ${aliasArn(aliasName)} is not found.`)
      return { body: {}, mutated: true }
    },

    ListAliases(input) {
      const keyFilter = optionalString(input, 'KeyId')
      const targetKeyId = keyFilter === undefined ? undefined : resolveKey(keyFilter).keyId
      const matching = [...aliases.values()].filter((alias) => targetKeyId === undefined || alias.targetKeyId === targetKeyId)
      const { items, more } = page(input, matching)
      const listed = items.map((alias) => ({
        AliasName: alias.aliasName,
        AliasArn: aliasArn(alias.aliasName),
        TargetKeyId: alias.targetKeyId,
        CreationDate: alias.creationDate,
        LastUpdatedDate: alias.lastUpdatedDate,
      }))
      return { body: { Aliases: listed, ...more }, mutated: false }
    },

    GenerateDataKey(input) {
      const length = dataKeyLength(input)
      const context = encryptionContextOf(input, 'EncryptionContext')
      const key = usableKey(resolveKey(requiredString(input, 'KeyId')))
      const plaintext = randomBytes(length)
      const blob = sealBlob(key, plaintext, context)
      return {
        body: { CiphertextBlob: blob.toString('base64'), Plaintext: plaintext.toString('base64'), KeyId: keyArn(key.keyId) },
        mutated: false,
      }
    },

    GenerateDataKeyWithoutPlaintext(input) {
      const length = dataKeyLength(input)
      const context = encryptionContextOf(input, 'EncryptionContext')
      const key = usableKey(resolveKey(requiredString(input, 'KeyId')))
      const blob = sealBlob(key, randomBytes(length), context)
      return { body: { CiphertextBlob: blob.toString('base64'), KeyId: keyArn(key.keyId) }, mutated: false }
    },

    Encrypt(input) {
      // Malformed input is reported before the key's state, as the service does.
      const plaintext = requiredBlob(input, 'Plaintext', 1, 4096)
      const context = encryptionContextOf(input, 'EncryptionContext')
      checkEncryptionAlgorithm(input, 'EncryptionAlgorithm')
      const key = usableKey(resolveKey(requiredString(input, 'KeyId')))
      const blob = sealBlob(key, plaintext, context)
      return {
        body: { CiphertextBlob: blob.toString('base64'), KeyId: keyArn(key.keyId), EncryptionAlgorithm: SYMMETRIC_DEFAULT },
        mutated: false,
      }
    },

    Decrypt(input) {
      checkEncryptionAlgorithm(input, 'EncryptionAlgorithm')
      const { key, plaintext } = decryptBlob(input, 'CiphertextBlob', 'KeyId', 'EncryptionContext')
      return {
        body: { KeyId: keyArn(key.keyId), Plaintext: plaintext.toString('base64'), EncryptionAlgorithm: SYMMETRIC_DEFAULT },
        mutated: false,
      }
    },

    ReEncrypt(input) {
      checkEncryptionAlgorithm(input, 'SourceEncryptionAlgorithm')
      checkEncryptionAlgorithm(input, 'DestinationEncryptionAlgorithm')
      const destination = usableKey(resolveKey(requiredString(input, 'DestinationKeyId')))
      const source = decryptBlob(input, 'CiphertextBlob', 'SourceKeyId', 'SourceEncryptionContext')
      const blob = sealBlob(destination, source.plaintext, encryptionContextOf(input, 'DestinationEncryptionContext'))
      return {
        body: {
          CiphertextBlob: blob.toString('base64'),
          SourceKeyId: keyArn(source.key.keyId),
          KeyId: keyArn(destination.keyId),
          SourceEncryptionAlgorithm: SYMMETRIC_DEFAULT,
          DestinationEncryptionAlgorithm: SYMMETRIC_DEFAULT,
        },
        mutated: false,
      }
    },

    DisableKey(input) {
      const key = resolveKey(requiredString(input, 'KeyId'))
      if (key.state === 'PendingDeletion') throw new KmsError('KMSInvalidStateException', `${keyArn(key.keyId)} is pending deletion.`)
      key.state = 'Disabled'
      return { body: {}, mutated: true }
    },

    EnableKey(input) {
      const key = resolveKey(requiredString(input, 'KeyId'))
      if (key.state === 'PendingDeletion') throw new KmsError('KMSInvalidStateException', `${keyArn(key.keyId)} is pending deletion.`)
      key.state = 'Enabled'
      return { body: {}, mutated: true }
    },

    ScheduleKeyDeletion(input) {
      const key = resolveKey(requiredString(input, 'KeyId'))
      const pendingWindowInDays = optionalInteger(input, 'PendingWindowInDays', 7, 30) ?? 30
      if (key.state === 'PendingDeletion') throw new KmsError('KMSInvalidStateException', `${keyArn(key.keyId)} is pending deletion.`)
      key.state = 'PendingDeletion'
      key.pendingWindowInDays = pendingWindowInDays
      key.deletionDate = nowSeconds() + pendingWindowInDays * 86400
      return {
        body: { KeyId: keyArn(key.keyId), DeletionDate: key.deletionDate, KeyState: key.state, PendingWindowInDays: pendingWindowInDays },
        mutated: true,
      }
    },

    CancelKeyDeletion(input) {
      const key = resolveKey(requiredString(input, 'KeyId'))
      if (key.state !== 'PendingDeletion') throw new KmsError('KMSInvalidStateException', `${keyArn(key.keyId)} is not pending deletion.`)
      // As on AWS, a key whose deletion is cancelled comes back disabled.
      key.state = 'Disabled'
      key.deletionDate = undefined
      key.pendingWindowInDays = undefined
      return { body: { KeyId: keyArn(key.keyId) }, mutated: true }
    },
  }

  let closed = false

  const readBody = async (request: http.IncomingMessage): Promise<Buffer> => {
    const chunks: Buffer[] = []
    let size = 0
    for await (const chunk of request as AsyncIterable<Buffer>) {
      size += chunk.length
      if (size > MAX_REQUEST_BYTES) throw new KmsError('ValidationException', `Request body exceeds ${MAX_REQUEST_BYTES} bytes.`)
      chunks.push(chunk)
    }
    return Buffer.concat(chunks)
  }

  /** Checks the request envelope and returns the operation name and its JSON input. */
  const parseRequest = (request: http.IncomingMessage, body: Buffer): { operation: string; input: JsonObject } => {
    if (request.method !== 'POST' || request.url?.split('?')[0] !== '/') {
      throw new KmsError('UnknownOperationException', `Only POST / is served, not ${request.method} ${request.url}.`)
    }
    const target = request.headers['x-amz-target']
    if (typeof target !== 'string' || !target.startsWith(TARGET_PREFIX)) {
      throw new KmsError('UnknownOperationException', 'Missing or malformed X-Amz-Target header.')
    }
    const operation = target.slice(TARGET_PREFIX.length)
    if (!Object.hasOwn(operations, operation)) throw new KmsError('UnknownOperationException', `Unknown operation ${operation}.`)
    const contentType = request.headers['content-type']?.split(';')[0]?.trim()
    if (contentType !== JSON_CONTENT_TYPE) {
      throw new KmsError('SerializationException', `Content-Type must be ${JSON_CONTENT_TYPE}, not ${contentType}.`)
    }
    const authorization = request.headers.authorization
    if (authorization === undefined) {
      throw new KmsError('MissingAuthenticationTokenException', 'Request is missing Authentication Token')
    }
    // Any credentials are accepted, but the header must be a SigV4 header scoped to this region and service.
    const scope = SIGV4_AUTHORIZATION.exec(authorization)
    if (!scope) throw new KmsError('IncompleteSignatureException', 'Authorization header is not a valid SigV4 header.')
    if (scope[1] !== region || scope[2] !== 'kms') {
      throw new KmsError('InvalidSignatureException', `Credential should be scoped to a valid region and service 'kms' (${region}).`)
    }
    let input: unknown
    try {
      input = body.length === 0 ? {} : JSON.parse(body.toString('utf8'))
    } catch {
      throw new KmsError('SerializationException', 'Request body is not valid JSON.')
    }
    if (typeof input !== 'object' || input === null || Array.isArray(input)) {
      throw new KmsError('SerializationException', 'Request body must be a JSON object.')
    }
    return { operation, input: input as JsonObject }
  }

  const send = (response: http.ServerResponse, status: number, body: JsonObject, errorType?: string): void => {
    if (response.destroyed || response.headersSent) return
    const json = JSON.stringify(body)
    response.writeHead(status, {
      'Content-Type': JSON_CONTENT_TYPE,
      'Content-Length': Buffer.byteLength(json),
      'x-amzn-RequestId': randomUUID(),
      ...(errorType ? { 'x-amzn-ErrorType': errorType } : {}),
    })
    response.end(json)
  }

  const handle = async (request: http.IncomingMessage, response: http.ServerResponse): Promise<void> => {
    const started = Date.now()
    let operation = '-'
    let status = 200
    let outcome = 'ok'
    peakConcurrentRequests = Math.max(peakConcurrentRequests, ++concurrentRequests)
    try {
      const body = await readBody(request)
      // Each request sleeps on its own timer, so latency never serialises concurrent requests.
      if (latencyMs > 0) await sleep(latencyMs)
      if (closed) {
        response.destroy()
        return
      }
      if (shouldThrottle()) {
        countCall('Throttled')
        throw new KmsError('ThrottlingException', 'Rate exceeded')
      }
      if (shouldFail()) {
        countCall('ServerError')
        throw new KmsError('KMSInternalException', 'The request was rejected because an internal exception occurred.', 500)
      }
      const parsed = parseRequest(request, body)
      operation = parsed.operation
      countCall(operation)
      const implementation = operations[operation] as (input: JsonObject) => OperationResult
      const result = implementation(parsed.input)
      // The client only hears success once the change is on disk.
      if (result.mutated) await persist()
      send(response, status, result.body)
    } catch (error) {
      const kmsError =
        error instanceof KmsError
          ? error
          : new KmsError('KMSInternalException', 'The request was rejected because an internal exception occurred.', 500)
      if (!(error instanceof KmsError)) log(`local-kms: internal error in ${operation}: ${(error as Error).message}`)
      status = kmsError.status
      outcome = kmsError.type
      send(response, status, { __type: kmsError.type, message: kmsError.message }, kmsError.type)
    } finally {
      concurrentRequests--
      log(`local-kms: ${operation} ${status} ${outcome} ${Date.now() - started}ms`)
    }
  }

  const server = http.createServer((request, response) => {
    void handle(request, response)
  })
  const host = options.host ?? '127.0.0.1'
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const { port } = server.address() as AddressInfo
  const endpoint = `http://${host.includes(':') ? `[${host}]` : host}:${port}`
  log(`local-kms: listening on ${endpoint} (${region}, account ${accountId})`)

  return {
    endpoint,
    region,
    async createKey(description = '') {
      const key = newKey(description)
      await persist()
      return keyArn(key.keyId)
    },
    setKeyEnabled(reference, enabled) {
      let key: KeyRecord
      try {
        key = resolveKey(reference)
      } catch (error) {
        throw new Error((error as Error).message)
      }
      if (key.state === 'PendingDeletion') throw new Error(`${keyArn(key.keyId)} is pending deletion`)
      key.state = enabled ? 'Enabled' : 'Disabled'
      persist().catch((error: Error) => log(`local-kms: could not write state file: ${error.message}`))
    },
    counts: () => ({ ...callCounts }),
    peakConcurrentRequests: () => peakConcurrentRequests,
    resetCounts() {
      callCounts = {}
      peakConcurrentRequests = concurrentRequests
    },
    async close() {
      closed = true
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()))
      server.closeAllConnections()
      await stopped
      await persistChain
      log('local-kms: closed')
    },
  }
}

/**
 * CLI entry: `envcrypt local-kms [--port N] [--state FILE] [--create-key] [--latency-ms N] [--throttle-rate R]`.
 * Prints exactly one JSON line on stdout ({"endpoint", "keyArn" with --create-key}), logs to stderr,
 * and serves until SIGTERM or SIGINT.
 */
export async function runLocalKms(options: LocalKmsOptions & { createKey?: boolean }): Promise<void> {
  const { createKey, ...serverOptions } = options
  const log = serverOptions.log ?? ((line: string) => process.stderr.write(line + '\n'))
  const kms = await startLocalKms({ ...serverOptions, log })
  try {
    const keyArn = createKey ? await kms.createKey('created by envcrypt local-kms --create-key') : undefined
    process.stdout.write(JSON.stringify(keyArn === undefined ? { endpoint: kms.endpoint } : { endpoint: kms.endpoint, keyArn }) + '\n')
    await new Promise<void>((resolve) => {
      const stop = (signal: NodeJS.Signals): void => {
        process.off('SIGTERM', stop)
        process.off('SIGINT', stop)
        log(`local-kms: ${signal} received, shutting down`)
        resolve()
      }
      process.on('SIGTERM', stop)
      process.on('SIGINT', stop)
    })
  } finally {
    await kms.close()
  }
}
