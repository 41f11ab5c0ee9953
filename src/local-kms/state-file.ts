// The local KMS's state file: keys and aliases as JSON, read on start and rewritten after every change.
import { promises as fs } from 'node:fs'
import writeFileAtomic from 'write-file-atomic'
import type { KeyState, KeyStore } from './key-store.js'

const STATE_FORMAT = 'envcrypt-local-kms/1'
const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

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

/** The key store recorded in `file`, or an empty one when there is no file. The region and account default
 *  to those the file records (else us-east-1 and 111122223333) and must match them when given. */
export async function loadKeyStore(
  file: string | undefined,
  requested: { region?: string; accountId?: string },
  log: (line: string) => void,
): Promise<KeyStore> {
  const saved = file ? await readStateFile(file) : undefined
  const store: KeyStore = {
    region: requested.region ?? saved?.region ?? 'us-east-1',
    accountId: requested.accountId ?? saved?.accountId ?? '111122223333',
    keys: new Map(),
    aliases: new Map(),
  }
  if (!saved) return store
  const { region, accountId } = store
  // Messages record key ARNs, so silently re-homing keys to another region or account would break them.
  if (saved.region !== region || saved.accountId !== accountId) {
    throw new Error(`${file} holds keys for ${saved.region}/${saved.accountId}, not ${region}/${accountId}`)
  }
  for (const key of saved.keys) {
    store.keys.set(key.KeyId, {
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
    store.aliases.set(alias.AliasName, {
      aliasName: alias.AliasName,
      targetKeyId: alias.TargetKeyId,
      creationDate: alias.CreationDate,
      lastUpdatedDate: alias.LastUpdatedDate,
    })
  }
  log(`local-kms: loaded ${store.keys.size} keys and ${store.aliases.size} aliases from ${file}`)
  return store
}

function snapshot(store: KeyStore): StateFileContents {
  return {
    format: STATE_FORMAT,
    region: store.region,
    accountId: store.accountId,
    keys: [...store.keys.values()].map((key) => ({
      KeyId: key.keyId,
      Material: key.material.toString('base64'),
      Description: key.description,
      CreationDate: key.creationDate,
      KeyState: key.state,
      DeletionDate: key.deletionDate,
      PendingWindowInDays: key.pendingWindowInDays,
    })),
    aliases: [...store.aliases.values()].map((alias) => ({
      AliasName: alias.aliasName,
      TargetKeyId: alias.targetKeyId,
      CreationDate: alias.creationDate,
      LastUpdatedDate: alias.lastUpdatedDate,
    })),
  }
}

export interface StateFileWriter {
  /** Writes the store as it is now; resolves once it is on disk. Nothing to do without a state file. */
  persist(): Promise<void>
  /** Resolves when every write started so far has finished. */
  settled(): Promise<void>
}

export function stateFileWriter(file: string | undefined, store: KeyStore): StateFileWriter {
  // Writes are chained so an older snapshot can never be renamed over a newer one.
  let persistChain: Promise<void> = Promise.resolve()
  return {
    persist() {
      if (!file) return Promise.resolve()
      const data = JSON.stringify(snapshot(store), null, 2) + '\n'
      // Temporary beside the file, fsync, then rename; mode 0600, since the file holds key material.
      const write = persistChain.then(() => writeFileAtomic(file, data, { mode: 0o600 }))
      persistChain = write.catch(() => undefined)
      return write
    },
    settled: () => persistChain,
  }
}
