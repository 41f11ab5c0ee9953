// Objects written by the Amazon S3 Encryption Client (Java, Go, Ruby, PHP, .NET SDKs): the envelope in the
// object's user metadata or in the instruction file KEY.instruction, the body AES-256-GCM (v2) or
// AES-256-CBC (v1, unauthenticated). The content cipher is chosen by x-amz-cek-alg (absent: CBC), the
// unwrap by x-amz-wrap-alg, never by which key header is present: Go's s3crypto writes CBC objects with
// x-amz-key-v2 too.
import { createDecipheriv, createPrivateKey, constants, privateDecrypt, type KeyObject } from 'node:crypto'
import type { KMS } from '@aws-sdk/client-kms'
import type { ByteSource } from '../message/engine.js'
import { readFile } from 'node:fs/promises'
import { describeError, EnvcryptError, IntegrityError, UsageError } from '../errors.js'
import { parseWrappingKeySpec, type WrappingKeySpec } from '../keys/keyrings.js'
import type { InputItem } from './local.js'
import type { Store } from './plan.js'

export const INSTRUCTION_SUFFIX = '.instruction'
const GCM = 'AES/GCM/NoPadding'
const CBC = 'AES/CBC/PKCS5Padding'
const TAG_BYTES = 16

export interface S3ecEnvelope {
  wrappedKey: Buffer
  iv: Buffer
  cekAlg: typeof GCM | typeof CBC
  /** kms+context, kms, AES/GCM, RSA-OAEP-SHA1 (v1 KMS objects: kms). */
  wrapAlg: string
  /** x-amz-matdesc: the KMS encryption context for kms+context and kms. */
  matdesc: Record<string, string>
  plaintextLength?: number
  /** Where the envelope came from, for messages and metadata. */
  location: 'metadata' | 'instruction file'
}

/** The wrapping keys an S3EC object may be unwrapped with (-W on migrate, -w on decrypt). */
export interface S3ecKeys {
  kms: KMS
  /** KMS key ARNs or ids the blob's key must be one of; empty: any (discovery). */
  kmsKeyIds: readonly string[]
  aesKey?: Buffer
  rsaPrivateKey?: KeyObject
  /** CBC bodies carry no authentication: refused unless the user opted in. */
  allowLegacyCbc: boolean
}

/** True when the user metadata (lowercase names, no x-amz-meta- prefix) holds an S3EC envelope. */
function hasEnvelope(metadata: Readonly<Record<string, string>>): boolean {
  return 'x-amz-key-v2' in metadata || 'x-amz-key' in metadata
}

/** Reads the envelope from a metadata map or a parsed instruction file (same names, no prefix). */
function parseEnvelope(fields: Readonly<Record<string, unknown>>, location: S3ecEnvelope['location'], object: string): S3ecEnvelope {
  const text = (name: string) => {
    const value = fields[name]
    return value === undefined || value === null ? undefined : String(value)
  }
  const bad = (why: string) => new EnvcryptError(`${object}: not an S3 Encryption Client object (${location}: ${why})`)
  const keyText = text('x-amz-key-v2') ?? text('x-amz-key')
  if (keyText === undefined) throw bad('no x-amz-key-v2 or x-amz-key')
  const ivText = text('x-amz-iv')
  if (ivText === undefined) throw bad('no x-amz-iv')
  const cekAlg = text('x-amz-cek-alg') ?? CBC
  if (cekAlg !== GCM && cekAlg !== CBC) throw bad(`content cipher "${cekAlg}" is not ${GCM} or ${CBC} (AES/CTR is for ranged reads only)`)
  const iv = Buffer.from(ivText, 'base64')
  if (iv.length !== (cekAlg === GCM ? 12 : 16)) throw bad(`x-amz-iv is ${iv.length} bytes, ${cekAlg} needs ${cekAlg === GCM ? 12 : 16}`)
  const tagLength = text('x-amz-tag-len')
  if (cekAlg === GCM && tagLength !== undefined && tagLength !== '128') throw bad(`x-amz-tag-len is ${tagLength}, only 128 is written by the clients`)
  const length = text('x-amz-unencrypted-content-length')
  return {
    wrappedKey: Buffer.from(keyText, 'base64'),
    iv,
    cekAlg,
    wrapAlg: text('x-amz-wrap-alg') ?? 'kms',
    matdesc: parseMatdesc(text('x-amz-matdesc'), bad),
    plaintextLength: length !== undefined && /^\d+$/.test(length) ? Number(length) : undefined,
    location,
  }
}

function parseMatdesc(text: string | undefined, bad: (why: string) => Error): Record<string, string> {
  if (text === undefined || text === '') return {}
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    throw bad('x-amz-matdesc is not JSON')
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw bad('x-amz-matdesc is not a JSON object')
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, String(v)]))
}

/** The 32-byte content key, unwrapped as x-amz-wrap-alg says. */
async function unwrapContentKey(envelope: S3ecEnvelope, keys: S3ecKeys, object: string): Promise<Buffer> {
  const fail = (why: string) => new EnvcryptError(`${object}: cannot unwrap the data key (${why})`)
  let key: Buffer
  switch (envelope.wrapAlg) {
    case 'kms+context':
      if (envelope.matdesc['aws:x-amz-cek-alg'] !== envelope.cekAlg) {
        throw new IntegrityError(`${object}: x-amz-matdesc's aws:x-amz-cek-alg does not name the content cipher ${envelope.cekAlg}`)
      }
      key = await kmsUnwrap(envelope, keys, fail)
      break
    case 'kms':
      key = await kmsUnwrap(envelope, keys, fail)
      break
    case 'AES/GCM':
      if (!keys.aesKey) throw fail('wrapped with AES/GCM: give the AES key, e.g. -W provider=raw-aes key=NAME material=file://KEY')
      key = aesGcmUnwrap(envelope, keys.aesKey, fail)
      break
    case 'RSA-OAEP-SHA1':
      if (!keys.rsaPrivateKey) throw fail('wrapped with RSA-OAEP-SHA1: give the RSA private key, e.g. -W provider=raw-rsa key=NAME material=file://KEY.pem')
      key = rsaOaepUnwrap(envelope, keys.rsaPrivateKey, fail)
      break
    default:
      throw fail(`key wrap "${envelope.wrapAlg}" is not supported (kms+context, kms, AES/GCM, RSA-OAEP-SHA1)`)
  }
  if (key.length !== 32) throw fail(`the data key is ${key.length} bytes, not 32`)
  return key
}

async function kmsUnwrap(envelope: S3ecEnvelope, keys: S3ecKeys, fail: (why: string) => Error): Promise<Buffer> {
  let answer
  try {
    answer = await keys.kms.decrypt({ CiphertextBlob: envelope.wrappedKey, EncryptionContext: envelope.matdesc })
  } catch (err) {
    throw fail(`KMS: ${describeError(err)}`)
  }
  if (keys.kmsKeyIds.length > 0 && !keys.kmsKeyIds.some((id) => answer.KeyId === id || answer.KeyId?.endsWith(`/${id}`))) {
    throw fail(`wrapped under ${answer.KeyId}, which is not one of the keys given`)
  }
  return Buffer.from(answer.Plaintext ?? new Uint8Array())
}

/** AES/GCM wrap: 12-byte nonce + AES-GCM(CEK) + tag, with the content cipher's name as AAD. */
function aesGcmUnwrap(envelope: S3ecEnvelope, aesKey: Buffer, fail: (why: string) => Error): Buffer {
  const blob = envelope.wrappedKey
  if (blob.length < 12 + TAG_BYTES) throw fail('the wrapped key is too short for AES/GCM')
  try {
    const decipher = createDecipheriv(`aes-${aesKey.length * 8}-gcm` as 'aes-256-gcm', aesKey, blob.subarray(0, 12))
    decipher.setAAD(Buffer.from(envelope.cekAlg, 'utf8'))
    decipher.setAuthTag(blob.subarray(blob.length - TAG_BYTES))
    return Buffer.concat([decipher.update(blob.subarray(12, blob.length - TAG_BYTES)), decipher.final()])
  } catch {
    throw fail('wrong AES key, or the wrapped key was altered')
  }
}

/** RSA-OAEP-SHA1 wrap: OAEP(SHA-1) of [key length byte] + key + content cipher name. */
function rsaOaepUnwrap(envelope: S3ecEnvelope, privateKey: KeyObject, fail: (why: string) => Error): Buffer {
  let pseudo: Buffer
  try {
    pseudo = privateDecrypt({ key: privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha1' }, envelope.wrappedKey)
  } catch {
    throw fail('wrong RSA key, or the wrapped key was altered')
  }
  const length = pseudo[0]
  const cipherName = pseudo.subarray(1 + length).toString('utf8')
  if (cipherName !== envelope.cekAlg) throw fail(`the wrapped key names content cipher "${cipherName}", the object ${envelope.cekAlg}`)
  return Buffer.from(pseudo.subarray(1, 1 + length))
}

/** The plaintext of the body. GCM: the tag is checked at the end, so a consumer must not publish anything
 *  before this generator returns. CBC: only padding can be checked. */
async function* decryptBody(envelope: S3ecEnvelope, contentKey: Buffer, body: ByteSource, keys: Pick<S3ecKeys, 'allowLegacyCbc'>, object: string): AsyncGenerator<Buffer> {
  if (envelope.cekAlg === CBC && !keys.allowLegacyCbc) {
    throw new EnvcryptError(`${object}: AES-CBC (S3 Encryption Client v1) is not authenticated; give --allow-legacy-s3ec-v1 to read it anyway`)
  }
  if (envelope.cekAlg === CBC) {
    yield* decryptCbcBody(envelope, contentKey, body, object)
    return
  }
  const decipher = createDecipheriv('aes-256-gcm', contentKey, envelope.iv)
  let held = Buffer.alloc(0)
  for await (const chunk of body) {
    // The last 16 bytes are the tag: hold them back until the body ends.
    const data = held.length ? Buffer.concat([held, chunk]) : Buffer.from(chunk)
    const usable = Math.max(0, data.length - TAG_BYTES)
    held = Buffer.from(data.subarray(usable))
    if (usable > 0) yield decipher.update(data.subarray(0, usable))
  }
  if (held.length < TAG_BYTES) throw new IntegrityError(`${object}: the body is shorter than its 16-byte GCM tag (truncated)`)
  decipher.setAuthTag(held)
  try {
    const last = decipher.final()
    if (last.length) yield last
  } catch {
    throw new IntegrityError(`${object}: the GCM tag does not match: the object was altered or truncated, or the key is wrong`)
  }
}

async function* decryptCbcBody(envelope: S3ecEnvelope, contentKey: Buffer, body: ByteSource, object: string): AsyncGenerator<Buffer> {
  const decipher = createDecipheriv('aes-256-cbc', contentKey, envelope.iv)
  for await (const chunk of body) {
    const out = decipher.update(chunk)
    if (out.length) yield out
  }
  try {
    const last = decipher.final()
    if (last.length) yield last
  } catch {
    throw new IntegrityError(`${object}: bad CBC padding: wrong key, or the object was altered or truncated`)
  }
}

/** The private key in an RSA PEM file (for -W provider=raw-rsa). */
function rsaPrivateKeyFrom(pem: Buffer, path: string): KeyObject {
  try {
    return createPrivateKey(pem)
  } catch {
    throw new EnvcryptError(`${path}: not an RSA private key in PEM`)
  }
}


/** The unwrapping keys from key specs: aws-kms key= ARNs limit KMS (none, or discovery: any), raw-aes and
 *  raw-rsa give the keys of AES/GCM and RSA-OAEP-SHA1 objects. `flag` names the option in errors. */
export async function s3ecKeysFromSpecs(groups: ReadonlyArray<WrappingKeySpec | string[]>, kms: KMS, allowLegacyCbc: boolean, flag: string): Promise<S3ecKeys> {
  const specs = groups.map((spec) => (Array.isArray(spec) ? parseWrappingKeySpec(spec) : spec))
  const keys: S3ecKeys = { kms, kmsKeyIds: [], allowLegacyCbc }
  for (const spec of specs) {
    if (spec.provider === 'aws-kms') keys.kmsKeyIds = [...keys.kmsKeyIds, ...spec.keys]
    else if (spec.provider === 'raw-aes') keys.aesKey = await readKeyFile(spec.materialPath!, flag)
    else keys.rsaPrivateKey = rsaPrivateKeyFrom(await readKeyFile(spec.materialPath!, flag), spec.materialPath!)
  }
  if (keys.aesKey && ![16, 24, 32].includes(keys.aesKey.length)) throw new UsageError(`${flag}: the AES key file holds ${keys.aesKey.length} bytes (16, 24 or 32)`)
  return keys
}

async function readKeyFile(path: string, flag: string): Promise<Buffer> {
  try {
    return await readFile(path)
  } catch (err) {
    throw new UsageError(`${flag}: cannot read key file ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
  }
}

/** One S3EC object: the envelope from its metadata, else from KEY.instruction; then the body's plaintext. */
export async function* decodeS3ecObject(input: InputItem, raw: ByteSource, keys: S3ecKeys, stores: readonly Store[], onEnvelope?: (envelope: S3ecEnvelope) => void): AsyncGenerator<Buffer> {
  const metadata = (raw as { userMetadata?: Record<string, string> }).userMetadata ?? {}
  const envelope = hasEnvelope(metadata)
    ? parseEnvelope(metadata, 'metadata', input.display)
    : parseEnvelope(await readInstructionFile(input, stores), 'instruction file', input.display)
  onEnvelope?.(envelope)
  const contentKey = await unwrapContentKey(envelope, keys, input.display)
  try {
    yield* decryptBody(envelope, contentKey, raw, keys, input.display)
  } finally {
    contentKey.fill(0)
  }
}

async function readInstructionFile(input: InputItem, stores: readonly Store[]): Promise<Record<string, unknown>> {
  const location = input.display + INSTRUCTION_SUFFIX
  let text: string
  try {
    const store = stores.find((s) => s.matches(location))
    text = store?.readText ? await store.readText(location) : await readFile(location, 'utf8')
  } catch (err) {
    throw new EnvcryptError(`${input.display}: no envelope in the object's metadata and no instruction file ${location} (${describeError(err)})`)
  }
  try {
    const value: unknown = JSON.parse(text)
    if (typeof value === 'object' && value !== null && !Array.isArray(value)) return value as Record<string, unknown>
  } catch {
    // reported below
  }
  throw new EnvcryptError(`${location}: the instruction file is not a JSON object`)
}
