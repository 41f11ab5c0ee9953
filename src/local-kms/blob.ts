// The ciphertext blob format of the local KMS: real AES-256-GCM under the key's secret material, with the
// key id and the encryption context bound as AAD, so a wrong context, a wrong key or a tampered blob fails
// the way it does against AWS.
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto'
import type { EncryptionContext } from './input.js'
import type { KeyRecord } from './key-store.js'
import { KmsError } from './kms-error.js'

// Blob layout: version (1) | key UUID (16) | IV (12) | AES-256-GCM ciphertext | tag (16).
const BLOB_VERSION = 0x01
const BLOB_HEADER_BYTES = 1 + 16
const IV_BYTES = 12
const TAG_BYTES = 16
const AAD_DOMAIN = Buffer.from('envcrypt-local-kms blob v1\0', 'utf8')

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

export function sealBlob(key: KeyRecord, plaintext: Buffer, context: EncryptionContext): Buffer {
  const header = Buffer.concat([Buffer.from([BLOB_VERSION]), uuidToBytes(key.keyId)])
  const iv = randomBytes(IV_BYTES)
  const cipher = createCipheriv('aes-256-gcm', key.material, iv)
  cipher.setAAD(blobAad(header, context))
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()])
  return Buffer.concat([header, iv, ciphertext, cipher.getAuthTag()])
}

/** The key id a blob claims; the claim is only trusted once the tag verifies. */
export function blobKeyId(blob: Buffer): string {
  if (blob.length < BLOB_HEADER_BYTES + IV_BYTES + 1 + TAG_BYTES || blob[0] !== BLOB_VERSION) {
    throw new KmsError('InvalidCiphertextException', 'The ciphertext is not a valid ciphertext blob.')
  }
  return bytesToUuid(blob.subarray(1, BLOB_HEADER_BYTES))
}

export function openBlob(key: KeyRecord, blob: Buffer, context: EncryptionContext): Buffer {
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
