// The local KMS's keys and aliases, as plain data, and the lookups every operation shares.
import { randomBytes, randomUUID } from 'node:crypto'
import { KmsError } from './kms-error.js'

export type KeyState = 'Enabled' | 'Disabled' | 'PendingDeletion'

export interface KeyRecord {
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

/** Everything the KMS operations read and change; the state file holds the same. */
export interface KeyStore {
  region: string
  accountId: string
  keys: Map<string, KeyRecord>
  aliases: Map<string, AliasRecord>
}

export const nowSeconds = (): number => Date.now() / 1000

export const keyArn = (store: KeyStore, keyId: string): string => `arn:aws:kms:${store.region}:${store.accountId}:key/${keyId}`
export const aliasArn = (store: KeyStore, aliasName: string): string => `arn:aws:kms:${store.region}:${store.accountId}:${aliasName}`

/** Resolves a key id, key ARN, alias name or alias ARN to a key, whatever its state. */
export function resolveKey(store: KeyStore, reference: string): KeyRecord {
  let id = reference
  if (id.startsWith('arn:')) {
    const match = /^arn:aws:kms:([^:]+):([^:]+):(key\/|alias\/)(.+)$/.exec(id)
    if (!match) throw new KmsError('NotFoundException', `Invalid arn ${reference}`)
    const [, arnRegion, arnAccount, kind, name] = match
    if (arnRegion !== store.region || arnAccount !== store.accountId) {
      throw new KmsError('NotFoundException', `Key '${reference}' does not exist`)
    }
    id = kind === 'alias/' ? `alias/${name}` : (name as string)
  }
  if (id.startsWith('alias/')) {
    const alias = store.aliases.get(id)
    if (!alias) throw new KmsError('NotFoundException', `Alias ${aliasArn(store, id)} is not found.`)
    id = alias.targetKeyId
  }
  const key = store.keys.get(id)
  if (!key) throw new KmsError('NotFoundException', `Key '${keyArn(store, id)}' does not exist`)
  return key
}

/** A key that may be used for cryptographic operations. */
export function usableKey(store: KeyStore, key: KeyRecord): KeyRecord {
  if (key.state === 'Disabled') throw new KmsError('DisabledException', `${keyArn(store, key.keyId)} is disabled.`)
  if (key.state === 'PendingDeletion') {
    throw new KmsError('KMSInvalidStateException', `${keyArn(store, key.keyId)} is pending deletion.`)
  }
  return key
}

export function newKey(store: KeyStore, description: string): KeyRecord {
  const key: KeyRecord = {
    keyId: randomUUID(),
    material: randomBytes(32),
    description,
    creationDate: nowSeconds(),
    state: 'Enabled',
  }
  store.keys.set(key.keyId, key)
  return key
}
