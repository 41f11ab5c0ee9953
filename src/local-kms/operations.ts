// The KMS operations (TrentService) as plain functions over a key store: each validates its JSON input,
// reads or changes the store, and returns the JSON answer; the HTTP layer (http.ts) does the rest.
import { randomBytes } from 'node:crypto'
import { blobKeyId, openBlob, sealBlob } from './blob.js'
import {
  SYMMETRIC_DEFAULT,
  checkEncryptionAlgorithm,
  dataKeyLength,
  encryptionContextOf,
  optionalInteger,
  optionalString,
  requiredBlob,
  requiredString,
  type JsonObject,
} from './input.js'
import { aliasArn, keyArn, newKey, nowSeconds, resolveKey, usableKey, type KeyRecord, type KeyStore } from './key-store.js'
import { KmsError, validation } from './kms-error.js'

const ALIAS_NAME_PATTERN = /^alias\/[a-zA-Z0-9:/_-]+$/

interface OperationResult {
  body: JsonObject
  /** True when keys or aliases changed and the state file must be rewritten. */
  mutated: boolean
}

export type Operation = (store: KeyStore, input: JsonObject) => OperationResult

function keyMetadata(store: KeyStore, key: KeyRecord): JsonObject {
  return {
    AWSAccountId: store.accountId,
    KeyId: key.keyId,
    Arn: keyArn(store, key.keyId),
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
  }
}

/** Pagination shared by ListKeys and ListAliases: Marker is the offset of the next item. */
function page<T>(input: JsonObject, items: T[]): { items: T[]; more: JsonObject } {
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

function decryptBlob(
  store: KeyStore,
  input: JsonObject,
  blobField: string,
  keyField: string,
  contextField: string,
): { key: KeyRecord; plaintext: Buffer } {
  const blob = requiredBlob(input, blobField, 1, 6144)
  const requestedKey = optionalString(input, keyField)
  const context = encryptionContextOf(input, contextField)
  const claimedKeyId = blobKeyId(blob)
  if (requestedKey !== undefined) {
    const requested = resolveKey(store, requestedKey)
    if (requested.keyId !== claimedKeyId) {
      throw new KmsError(
        'IncorrectKeyException',
        'The key ID in the request does not identify a KMS key that can perform this operation.',
      )
    }
  }
  const key = store.keys.get(claimedKeyId)
  // A blob naming a key this server never had cannot be authenticated at all.
  if (!key) throw new KmsError('InvalidCiphertextException', 'The ciphertext refers to an unknown key.')
  usableKey(store, key)
  return { key, plaintext: openBlob(key, blob, context) }
}

export const operations: Record<string, Operation> = {
  CreateKey(store, input) {
    const keySpec = optionalString(input, 'KeySpec') ?? optionalString(input, 'CustomerMasterKeySpec') ?? SYMMETRIC_DEFAULT
    if (keySpec !== SYMMETRIC_DEFAULT) throw validation(`KeySpec ${keySpec} is not supported here; only ${SYMMETRIC_DEFAULT}.`)
    const keyUsage = optionalString(input, 'KeyUsage') ?? 'ENCRYPT_DECRYPT'
    if (keyUsage !== 'ENCRYPT_DECRYPT') throw validation(`KeyUsage ${keyUsage} is not supported for ${SYMMETRIC_DEFAULT}.`)
    const origin = optionalString(input, 'Origin') ?? 'AWS_KMS'
    if (origin !== 'AWS_KMS') throw validation(`Origin ${origin} is not supported here.`)
    const description = optionalString(input, 'Description', 0, 8192) ?? ''
    return { body: { KeyMetadata: keyMetadata(store, newKey(store, description)) }, mutated: true }
  },

  DescribeKey(store, input) {
    return { body: { KeyMetadata: keyMetadata(store, resolveKey(store, requiredString(input, 'KeyId'))) }, mutated: false }
  },

  ListKeys(store, input) {
    const { items, more } = page(input, [...store.keys.values()])
    return { body: { Keys: items.map((key) => ({ KeyId: key.keyId, KeyArn: keyArn(store, key.keyId) })), ...more }, mutated: false }
  },

  CreateAlias(store, input) {
    const aliasName = requiredString(input, 'AliasName', 1, 256)
    if (!ALIAS_NAME_PATTERN.test(aliasName)) {
      throw validation(`AliasName ${aliasName} must match ${ALIAS_NAME_PATTERN.source}.`)
    }
    if (aliasName.startsWith('alias/aws/')) throw validation('Alias names starting with alias/aws/ are reserved.')
    const target = resolveKey(store, requiredString(input, 'TargetKeyId'))
    if (target.state === 'PendingDeletion') {
      throw new KmsError('KMSInvalidStateException', `${keyArn(store, target.keyId)} is pending deletion.`)
    }
    if (store.aliases.has(aliasName)) throw new KmsError('AlreadyExistsException', `An alias with the name ${aliasArn(store, aliasName)} already exists`)
    const now = nowSeconds()
    store.aliases.set(aliasName, { aliasName, targetKeyId: target.keyId, creationDate: now, lastUpdatedDate: now })
    return { body: {}, mutated: true }
  },

  DeleteAlias(store, input) {
    const aliasName = requiredString(input, 'AliasName', 1, 256)
    if (!store.aliases.delete(aliasName)) throw new KmsError('NotFoundException', `Alias ${aliasArn(store, aliasName)} is not found.`)
    return { body: {}, mutated: true }
  },

  ListAliases(store, input) {
    const keyFilter = optionalString(input, 'KeyId')
    const targetKeyId = keyFilter === undefined ? undefined : resolveKey(store, keyFilter).keyId
    const matching = [...store.aliases.values()].filter((alias) => targetKeyId === undefined || alias.targetKeyId === targetKeyId)
    const { items, more } = page(input, matching)
    const listed = items.map((alias) => ({
      AliasName: alias.aliasName,
      AliasArn: aliasArn(store, alias.aliasName),
      TargetKeyId: alias.targetKeyId,
      CreationDate: alias.creationDate,
      LastUpdatedDate: alias.lastUpdatedDate,
    }))
    return { body: { Aliases: listed, ...more }, mutated: false }
  },

  GenerateDataKey(store, input) {
    const length = dataKeyLength(input)
    const context = encryptionContextOf(input, 'EncryptionContext')
    const key = usableKey(store, resolveKey(store, requiredString(input, 'KeyId')))
    const plaintext = randomBytes(length)
    const blob = sealBlob(key, plaintext, context)
    return {
      body: { CiphertextBlob: blob.toString('base64'), Plaintext: plaintext.toString('base64'), KeyId: keyArn(store, key.keyId) },
      mutated: false,
    }
  },

  GenerateDataKeyWithoutPlaintext(store, input) {
    const length = dataKeyLength(input)
    const context = encryptionContextOf(input, 'EncryptionContext')
    const key = usableKey(store, resolveKey(store, requiredString(input, 'KeyId')))
    const blob = sealBlob(key, randomBytes(length), context)
    return { body: { CiphertextBlob: blob.toString('base64'), KeyId: keyArn(store, key.keyId) }, mutated: false }
  },

  Encrypt(store, input) {
    // Malformed input is reported before the key's state, as the service does.
    const plaintext = requiredBlob(input, 'Plaintext', 1, 4096)
    const context = encryptionContextOf(input, 'EncryptionContext')
    checkEncryptionAlgorithm(input, 'EncryptionAlgorithm')
    const key = usableKey(store, resolveKey(store, requiredString(input, 'KeyId')))
    const blob = sealBlob(key, plaintext, context)
    return {
      body: { CiphertextBlob: blob.toString('base64'), KeyId: keyArn(store, key.keyId), EncryptionAlgorithm: SYMMETRIC_DEFAULT },
      mutated: false,
    }
  },

  Decrypt(store, input) {
    checkEncryptionAlgorithm(input, 'EncryptionAlgorithm')
    const { key, plaintext } = decryptBlob(store, input, 'CiphertextBlob', 'KeyId', 'EncryptionContext')
    return {
      body: { KeyId: keyArn(store, key.keyId), Plaintext: plaintext.toString('base64'), EncryptionAlgorithm: SYMMETRIC_DEFAULT },
      mutated: false,
    }
  },

  ReEncrypt(store, input) {
    checkEncryptionAlgorithm(input, 'SourceEncryptionAlgorithm')
    checkEncryptionAlgorithm(input, 'DestinationEncryptionAlgorithm')
    const destination = usableKey(store, resolveKey(store, requiredString(input, 'DestinationKeyId')))
    const source = decryptBlob(store, input, 'CiphertextBlob', 'SourceKeyId', 'SourceEncryptionContext')
    const blob = sealBlob(destination, source.plaintext, encryptionContextOf(input, 'DestinationEncryptionContext'))
    return {
      body: {
        CiphertextBlob: blob.toString('base64'),
        SourceKeyId: keyArn(store, source.key.keyId),
        KeyId: keyArn(store, destination.keyId),
        SourceEncryptionAlgorithm: SYMMETRIC_DEFAULT,
        DestinationEncryptionAlgorithm: SYMMETRIC_DEFAULT,
      },
      mutated: false,
    }
  },

  DisableKey(store, input) {
    const key = resolveKey(store, requiredString(input, 'KeyId'))
    if (key.state === 'PendingDeletion') throw new KmsError('KMSInvalidStateException', `${keyArn(store, key.keyId)} is pending deletion.`)
    key.state = 'Disabled'
    return { body: {}, mutated: true }
  },

  EnableKey(store, input) {
    const key = resolveKey(store, requiredString(input, 'KeyId'))
    if (key.state === 'PendingDeletion') throw new KmsError('KMSInvalidStateException', `${keyArn(store, key.keyId)} is pending deletion.`)
    key.state = 'Enabled'
    return { body: {}, mutated: true }
  },

  ScheduleKeyDeletion(store, input) {
    const key = resolveKey(store, requiredString(input, 'KeyId'))
    const pendingWindowInDays = optionalInteger(input, 'PendingWindowInDays', 7, 30) ?? 30
    if (key.state === 'PendingDeletion') throw new KmsError('KMSInvalidStateException', `${keyArn(store, key.keyId)} is pending deletion.`)
    key.state = 'PendingDeletion'
    key.pendingWindowInDays = pendingWindowInDays
    key.deletionDate = nowSeconds() + pendingWindowInDays * 86400
    return {
      body: { KeyId: keyArn(store, key.keyId), DeletionDate: key.deletionDate, KeyState: key.state, PendingWindowInDays: pendingWindowInDays },
      mutated: true,
    }
  },

  CancelKeyDeletion(store, input) {
    const key = resolveKey(store, requiredString(input, 'KeyId'))
    if (key.state !== 'PendingDeletion') throw new KmsError('KMSInvalidStateException', `${keyArn(store, key.keyId)} is not pending deletion.`)
    // As on AWS, a key whose deletion is cancelled comes back disabled.
    key.state = 'Disabled'
    key.deletionDate = undefined
    key.pendingWindowInDays = undefined
    return { body: { KeyId: keyArn(store, key.keyId) }, mutated: true }
  },
}
