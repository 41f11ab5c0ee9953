// `envcrypt migrate`: re-encrypts files written by home-made KMS envelope scripts as standard Encryption SDK
// messages. Each legacy file is decoded as a stream straight into the encrypt engine (through tree.ts's
// `transformSource` hook), so plaintext never touches the disk.
//
// The legacy formats carry no authentication: a decoder can notice a wrong format or bad padding, never an
// alteration. What was altered before migration stays altered, now inside an authenticated message.
import { createDecipheriv, createHash, pbkdf2, timingSafeEqual, type Hash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { basename, resolve } from 'node:path'
import { Writable } from 'node:stream'
import { promisify } from 'node:util'
import type { KMS } from '@aws-sdk/client-kms'
import type { ByteSource } from './message/engine.js'
import { describeError, EnvcryptError, UsageError } from './errors.js'
import type { InputItem } from './store/local.js'
import { createKmsClient, type KmsCallCounts, type WrappingKeySpec } from './keys/keyrings.js'
import { decodeS3ecObject, INSTRUCTION_SUFFIX, s3ecKeysFromSpecs } from './store/s3ec.js'
import type { Store } from './store/plan.js'
import { encryptTree, type EncryptTreeOptions, type SourceTransformer, type TreeSummary } from './tree.js'

export const LEGACY_SCHEMES = ['cloudonaut-v1', 'openssl-kms', 'ddb-ctr', 's3ec'] as const
export type LegacyScheme = (typeof LEGACY_SCHEMES)[number]

/** Encryption-context key naming the scheme a message was migrated from. */
export const MIGRATED_FROM_KEY = 'envcrypt:migrated-from'
/** openssl-kms without --data-key-file: the blob for FILE is FILE + this suffix, beside it. */
export const DEFAULT_DATA_KEY_SUFFIX = '.key'
/** `openssl enc -pbkdf2` default (OpenSSL 1.1.1 and 3.x), as the walkthrough uses it. */
const OPENSSL_PBKDF2_ITERATIONS = 10_000

// KMS ciphertext blobs are at most 6144 bytes; a larger length field means this is not the format.
const MAX_KMS_BLOB = 6144
const AES_BLOCK = 16

export interface MigrateTreeOptions extends Omit<EncryptTreeOptions, 'transformSource' | 'selectInput' | 'encode'> {
  from: LegacyScheme
  /** openssl-kms: one KMS ciphertext blob (raw bytes or base64 text) for every file. */
  dataKeyFile?: string
  /** openssl-kms without dataKeyFile: each file's blob is beside it, named FILE + suffix (default `.key`). */
  dataKeySuffix?: string
  /** ddb-ctr: the `aws dynamodb scan --output json` export of the key table. */
  keyIndex?: string
  /** Remove each source once its message was written and decrypted back to the same SHA-256. */
  deleteSource?: boolean
  /** Where the legacy data keys' KMS key lives, if not the standard chain's region/profile. */
  legacyRegion?: string
  legacyProfile?: string
  /** s3ec: the keys the objects' data keys may be unwrapped with (-W); KMS keys limit discovery. */
  fromWrappingKeys?: Array<WrappingKeySpec | string[]>
  /** s3ec: read AES-CBC (v1) objects, which carry no authentication. */
  allowLegacyS3ecV1?: boolean
}

/** Runs the migration; one summary as encryptTree's, KMS calls for the legacy data keys included. */
export async function migrateTree(options: MigrateTreeOptions): Promise<TreeSummary> {
  const scheme = options.from
  if (!LEGACY_SCHEMES.includes(scheme)) throw new UsageError(`--from: unknown scheme "${scheme}" (${LEGACY_SCHEMES.join(', ')})`)
  checkSchemeOptions(options)
  const context = options.encryptionContext ?? {}
  if (MIGRATED_FROM_KEY in context) throw new UsageError(`-c/--encryption-context: "${MIGRATED_FROM_KEY}" is set by migrate itself`)

  const legacyKmsCalls: KmsCallCounts = {}
  const kms = createKmsClient({ region: options.legacyRegion, profile: options.legacyProfile, kmsCalls: legacyKmsCalls, kmsClientConfig: options.kmsClientConfig })
  const dataKeys = dataKeyUnwrapper(kms)
  try {
    const decode = await legacyDecoder(options, dataKeys.unwrap, kms)
    const transformSource: SourceTransformer = async (input, raw) => {
      const hash = options.deleteSource ? createHash('sha256') : undefined
      const plaintext = decode(input, raw)
      return {
        source: hash ? hashing(plaintext, hash) : plaintext,
        // CTR keeps the length; CBC's padding is only known at the end.
        plaintextLength: scheme === 'ddb-ctr' ? input.size : undefined,
        afterCommit: hash
          ? async (output) => {
              await verifyThenRemove(input, hash, output.decryptInto)
              // An S3 Encryption Client object's instruction file is its envelope: it goes with it.
              if (scheme === 's3ec') await input.removeSidecar?.(INSTRUCTION_SUFFIX)
            }
          : undefined,
      }
    }
    const summary = await encryptTree({
      ...options,
      suffix: options.suffix ?? '.encrypted',
      encryptionContext: { ...context, [MIGRATED_FROM_KEY]: scheme },
      transformSource,
      selectInput: inputSelector(options),
    })
    for (const [operation, count] of Object.entries(legacyKmsCalls)) {
      summary.kms_calls[operation] = (summary.kms_calls[operation] ?? 0) + count
    }
    return summary
  } finally {
    dataKeys.wipe()
    kms.destroy()
  }
}

function checkSchemeOptions(options: MigrateTreeOptions): void {
  const { from } = options
  if (from !== 'openssl-kms' && (options.dataKeyFile !== undefined || options.dataKeySuffix !== undefined)) {
    throw new UsageError('--data-key-file and --data-key-suffix apply to --from openssl-kms only')
  }
  if (options.dataKeyFile !== undefined && options.dataKeySuffix !== undefined) {
    throw new UsageError('--data-key-file and --data-key-suffix exclude each other')
  }
  if (options.dataKeySuffix === '') throw new UsageError('--data-key-suffix must not be empty')
  if (from !== 's3ec' && (options.fromWrappingKeys?.length || options.allowLegacyS3ecV1)) throw new UsageError('-W/--from-wrapping-keys and --allow-legacy-s3ec-v1 apply to --from s3ec only')
  if (from === 'ddb-ctr' && options.keyIndex === undefined) throw new UsageError('--from ddb-ctr needs --key-index FILE (the `aws dynamodb scan --output json` export)')
  if (from !== 'ddb-ctr' && options.keyIndex !== undefined) throw new UsageError('--key-index applies to --from ddb-ctr only')
}

/** Key files and the key index are never inputs, even when they sit inside the input tree. */
function inputSelector(options: MigrateTreeOptions): (input: InputItem) => boolean {
  const keyFiles = new Set([options.dataKeyFile, options.keyIndex].filter((p) => p !== undefined).map((p) => resolve(p)))
  const perFileSuffix = options.from === 'openssl-kms' && options.dataKeyFile === undefined ? (options.dataKeySuffix ?? DEFAULT_DATA_KEY_SUFFIX) : undefined
  // S3EC instruction files are envelopes of their objects, not inputs.
  const envelopeSuffix = options.from === 's3ec' ? INSTRUCTION_SUFFIX : undefined
  return (input) =>
    !keyFiles.has(input.display) && !(perFileSuffix && input.display.endsWith(perFileSuffix)) && !(envelopeSuffix && input.display.endsWith(envelopeSuffix))
}

// ---------- data keys ----------

type Unwrap = (blob: Uint8Array) => Promise<Buffer>

/** KMS Decrypt of legacy data-key blobs, once per distinct blob (a data set often shares one key). */
function dataKeyUnwrapper(kms: KMS): { unwrap: Unwrap; wipe(): void } {
  const known = new Map<string, Promise<Buffer>>()
  const unwrap: Unwrap = (blob) => {
    const id = Buffer.from(blob).toString('base64')
    let key = known.get(id)
    if (!key) {
      // No KeyId: for a symmetric key, KMS finds the key from the blob itself.
      key = kms.decrypt({ CiphertextBlob: blob }).then(
        (answer) => {
          const plaintext = Buffer.from(answer.Plaintext ?? new Uint8Array())
          if (plaintext.length !== 32) throw new EnvcryptError(`the data key is ${plaintext.length} bytes; these schemes use AES-256 (32-byte) data keys`)
          return plaintext
        },
        (err) => {
          throw new EnvcryptError(`KMS could not decrypt the data key (${describeError(err)})`)
        },
      )
      key.catch(() => undefined)
      known.set(id, key)
    }
    return key
  }
  return {
    unwrap,
    wipe() {
      for (const key of known.values()) void key.then((bytes) => bytes.fill(0), () => undefined)
      known.clear()
    },
  }
}

// ---------- decoders: legacy bytes in, plaintext out ----------

type Decode = (input: InputItem, raw: ByteSource) => AsyncGenerator<Buffer>

async function legacyDecoder(options: MigrateTreeOptions, unwrap: Unwrap, kms: KMS): Promise<Decode> {
  switch (options.from) {
    case 's3ec': {
      const keys = await s3ecKeysFromSpecs(options.fromWrappingKeys ?? [], kms, options.allowLegacyS3ecV1 ?? false, '-W/--from-wrapping-keys')
      return (input, raw) => decodeS3ecObject(input, raw, keys, options.stores ?? [])
    }
    case 'cloudonaut-v1':
      return (_input, raw) => decodeCloudonautV1(raw, unwrap)
    case 'openssl-kms': {
      const blobFor = options.dataKeyFile !== undefined
        ? await sharedBlob(options.dataKeyFile)
        : blobBeside(options.dataKeySuffix ?? DEFAULT_DATA_KEY_SUFFIX, options.stores ?? [])
      return (input, raw) => decodeOpensslKms(raw, async () => unwrap(await blobFor(input)))
    }
    case 'ddb-ctr': {
      const index = await readKeyIndex(options.keyIndex!)
      return (input, raw) => decodeDdbCtr(raw, async () => unwrap(index.blobFor(input)))
    }
  }
}

/** cloudonaut-v1: [1, 0, 0, 0, N as uint32 LE] + N-byte KMS blob + 8 bytes whose lowercase hex (16 ASCII
 *  characters) is the IV + AES-256-CBC body with PKCS#7 padding. */
async function* decodeCloudonautV1(raw: ByteSource, unwrap: Unwrap): AsyncGenerator<Buffer> {
  const reader = new ByteReader(raw)
  try {
    const header = await reader.read(8)
    if (header.length < 8) throw notScheme('cloudonaut-v1', `the file is ${header.length} bytes, shorter than the 8-byte header`)
    if (header[0] !== 1) throw notScheme('cloudonaut-v1', `version byte is 0x${header[0].toString(16).padStart(2, '0')}, expected 0x01`)
    if (header[1] !== 0 || header[2] !== 0 || header[3] !== 0) throw notScheme('cloudonaut-v1', 'reserved header bytes 1-3 are not zero')
    const blobLength = header.readUInt32LE(4)
    if (blobLength === 0 || blobLength > MAX_KMS_BLOB) throw notScheme('cloudonaut-v1', `encrypted data key length ${blobLength} is not a KMS ciphertext blob length (1-${MAX_KMS_BLOB})`)
    const blob = await reader.read(blobLength)
    const ivSource = await reader.read(8)
    if (blob.length < blobLength || ivSource.length < 8) throw notScheme('cloudonaut-v1', 'the file ends inside the header')
    const iv = Buffer.from(ivSource.toString('hex'), 'ascii')
    yield* decryptCbc(reader.rest(), await unwrap(blob), iv, 'cloudonaut-v1')
  } finally {
    await reader.close()
  }
}

/** openssl-kms: `openssl enc -aes-256-cbc -pbkdf2` output, "Salted__" + 8-byte salt + CBC body; key and IV
 *  from PBKDF2-HMAC-SHA256 (10,000 iterations) of the passphrase, the base64 text of the plaintext data key. */
async function* decodeOpensslKms(raw: ByteSource, dataKey: () => Promise<Buffer>): AsyncGenerator<Buffer> {
  const reader = new ByteReader(raw)
  try {
    const header = await reader.read(16)
    if (header.length < 16 || header.subarray(0, 8).toString('latin1') !== 'Salted__') {
      throw notScheme('openssl-kms', 'it does not start with "Salted__" and an 8-byte salt (openssl enc -salt output)')
    }
    const passphrase = (await dataKey()).toString('base64')
    const derived = await promisify(pbkdf2)(passphrase, header.subarray(8, 16), OPENSSL_PBKDF2_ITERATIONS, 48, 'sha256')
    try {
      yield* decryptCbc(reader.rest(), derived.subarray(0, 32), derived.subarray(32, 48), 'openssl-kms')
    } finally {
      derived.fill(0)
    }
  } finally {
    await reader.close()
  }
}

/** ddb-ctr: the whole file is AES-256-CTR with an all-zero IV; the data key blob is in the key index. */
async function* decodeDdbCtr(raw: ByteSource, dataKey: () => Promise<Buffer>): AsyncGenerator<Buffer> {
  const decipher = createDecipheriv('aes-256-ctr', await dataKey(), Buffer.alloc(AES_BLOCK))
  for await (const chunk of raw) {
    const plaintext = decipher.update(chunk)
    if (plaintext.length > 0) yield plaintext
  }
  const last = decipher.final()
  if (last.length > 0) yield last
}

async function* decryptCbc(body: AsyncIterable<Buffer>, key: Buffer, iv: Buffer, scheme: LegacyScheme): AsyncGenerator<Buffer> {
  const decipher = createDecipheriv('aes-256-cbc', key, iv)
  let bodyBytes = 0
  for await (const chunk of body) {
    bodyBytes += chunk.length
    const plaintext = decipher.update(chunk)
    if (plaintext.length > 0) yield plaintext
  }
  if (bodyBytes === 0 || bodyBytes % AES_BLOCK !== 0) {
    throw new EnvcryptError(`${scheme}: the body is ${bodyBytes} bytes, not a whole number of 16-byte AES blocks (truncated, or not ${scheme})`)
  }
  let last: Buffer
  try {
    last = decipher.final()
  } catch {
    throw new EnvcryptError(`${scheme}: bad padding: the body does not decrypt under its data key (altered, wrong key, or not ${scheme})`)
  }
  if (last.length > 0) yield last
}

function notScheme(scheme: LegacyScheme, cause: string): EnvcryptError {
  return new EnvcryptError(`not in the ${scheme} format: ${cause}`)
}

/** Reads exact byte counts from the front of a source, then hands over the rest as a stream. */
class ByteReader {
  private readonly iterator: AsyncIterator<Uint8Array>
  private pending = Buffer.alloc(0)
  constructor(source: ByteSource) {
    this.iterator = source[Symbol.asyncIterator]()
  }

  /** Exactly `count` bytes, or fewer if the source ends first. */
  async read(count: number): Promise<Buffer> {
    while (this.pending.length < count) {
      const next = await this.iterator.next()
      if (next.done) break
      this.pending = Buffer.concat([this.pending, next.value])
    }
    const bytes = this.pending.subarray(0, count)
    this.pending = this.pending.subarray(count)
    return bytes
  }

  async *rest(): AsyncGenerator<Buffer> {
    if (this.pending.length > 0) yield this.pending
    this.pending = Buffer.alloc(0)
    for (;;) {
      const next = await this.iterator.next()
      if (next.done) return
      yield Buffer.from(next.value.buffer, next.value.byteOffset, next.value.byteLength)
    }
  }

  /** Releases the source (closes the file) when decoding stops early. */
  async close(): Promise<void> {
    await this.iterator.return?.()
  }
}

// ---------- where the data key blobs are ----------

type BlobFor = (input: InputItem) => Promise<Uint8Array>

/** One blob for every file; read up front, so a wrong path stops the run before anything is written. */
async function sharedBlob(path: string): Promise<BlobFor> {
  let bytes: Buffer
  try {
    bytes = await readFile(path)
  } catch (err) {
    throw new UsageError(`--data-key-file ${path}: cannot read it (${describeError(err)})`)
  }
  const blob = parseBlob(bytes, path)
  return async () => blob
}

/** The per-file rule: the blob for FILE (local path or s3:// URI) is FILE + suffix. */
function blobBeside(suffix: string, stores: readonly Store[]): BlobFor {
  return async (input) => {
    const location = input.display + suffix
    try {
      const store = stores.find((s) => s.matches(location))
      if (!store) return parseBlob(await readFile(location), location)
      const { items } = await store.listInputs(location, false)
      if (items.length !== 1) throw new EnvcryptError('not found')
      const chunks: Uint8Array[] = []
      for await (const chunk of await items[0].open()) chunks.push(chunk)
      return parseBlob(Buffer.concat(chunks), location)
    } catch (err) {
      throw new EnvcryptError(`no data key file ${location} (openssl-kms looks for FILE${suffix} beside each file; or give --data-key-file) (${describeError(err)})`)
    }
  }
}

/** A blob file holds the raw bytes (`fileb://`, `base64 --decode`) or the base64 text the AWS CLI prints.
 *  Raw KMS blobs start with non-text bytes, so the two cannot be confused. */
function parseBlob(bytes: Buffer, location: string): Uint8Array {
  const text = bytes.toString('latin1').trim()
  const blob = /^[A-Za-z0-9+/]+={0,2}$/.test(text) ? Buffer.from(text, 'base64') : bytes
  if (blob.length === 0 || blob.length > MAX_KMS_BLOB) throw new EnvcryptError(`${location} does not hold a KMS ciphertext blob (${blob.length} bytes)`)
  return blob
}

interface KeyIndex {
  blobFor(input: InputItem): Uint8Array
}

/** The DynamoDB JSON scan export: {"Items": [{"fileName": {"S": ...}, "encryptedDataKey": {"B": base64}}]}.
 *  A file's entry is looked up by its path relative to the -i root, then its S3 object key, then its base name. */
async function readKeyIndex(path: string): Promise<KeyIndex> {
  let parsed: unknown
  try {
    parsed = JSON.parse(await readFile(path, 'utf8'))
  } catch (err) {
    throw new UsageError(`--key-index ${path}: not readable JSON (${describeError(err)})`)
  }
  const items = (parsed as { Items?: unknown })?.Items
  if (!Array.isArray(items)) throw new UsageError(`--key-index ${path}: no "Items" array (expected the output of aws dynamodb scan --output json)`)
  const blobs = new Map<string, Uint8Array | 'ambiguous'>()
  items.forEach((item, position) => {
    const name = item?.fileName?.S
    const encoded = item?.encryptedDataKey?.B ?? item?.encryptedDataKey?.S
    if (typeof name !== 'string' || typeof encoded !== 'string') {
      throw new UsageError(`--key-index ${path}: item ${position} lacks fileName {"S"} or encryptedDataKey {"B"}`)
    }
    const blob = Buffer.from(encoded, 'base64')
    const previous = blobs.get(name)
    blobs.set(name, previous === undefined || (previous !== 'ambiguous' && Buffer.from(previous).equals(blob)) ? blob : 'ambiguous')
  })
  return {
    blobFor(input) {
      const s3Key = input.display.startsWith('s3://') ? input.display.replace(/^s3:\/\/[^/]+\//, '') : undefined
      const names = [...new Set([input.relPath, s3Key, basename(input.relPath)].filter((n): n is string => n !== undefined))]
      for (const name of names) {
        const blob = blobs.get(name)
        if (blob === 'ambiguous') throw new EnvcryptError(`key index ${path} has different data keys for "${name}"`)
        if (blob) return blob
      }
      throw new EnvcryptError(`no entry for ${names.map((n) => `"${n}"`).join(' or ')} in key index ${path}`)
    },
  }
}

// ---------- --delete-source ----------

async function* hashing(source: AsyncIterable<Buffer>, hash: Hash): AsyncGenerator<Buffer> {
  for await (const chunk of source) {
    hash.update(chunk)
    yield chunk
  }
}

/** Deletes the source only if the message just written decrypts to the plaintext that went in. */
async function verifyThenRemove(input: InputItem, plaintextHash: Hash, decryptInto: (sink: Writable) => Promise<unknown>): Promise<void> {
  const expected = plaintextHash.digest()
  const check = createHash('sha256')
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      check.update(chunk)
      callback()
    },
  })
  try {
    await decryptInto(sink)
  } catch (err) {
    throw new EnvcryptError(`written, but decrypting it back failed, so the source was kept (${describeError(err)})`)
  }
  if (!timingSafeEqual(expected, check.digest())) throw new EnvcryptError('written, but it decrypts to different bytes, so the source was kept')
  if (!input.remove) throw new EnvcryptError('written and verified, but this input cannot be deleted, so the source was kept')
  await input.remove()
}
