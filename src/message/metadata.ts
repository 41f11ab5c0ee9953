// The metadata stream: one JSON object per line per file, shaped as aws-encryption-cli's
// `--metadata-output` (keys sorted, byte fields base64, non-ASCII escaped as \uXXXX) so its jq audits work.
import { createWriteStream, type WriteStream } from 'node:fs'
import type { MessageHeader } from '@aws-crypto/client-node'
import { algorithmName } from './algorithms.js'
import type { HeaderAuth } from './engine.js'

export type Mode = 'encrypt' | 'decrypt' | 'decrypt-unsigned' | 'verify'

const b64 = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64')

export interface HeaderRecord {
  version: string
  type: number | null
  algorithm: string
  message_id: string
  encryption_context: Record<string, string>
  encrypted_data_keys: Array<{ key_provider: { provider_id: string; key_info: string }; encrypted_data_key: string }>
  content_type: number
  header_iv_length: number | null
  frame_length: number
  commitment_key: string | null
}

export function headerRecord(header: MessageHeader): HeaderRecord {
  const isV1 = header.version === 1
  const edks = header.encryptedDataKeys.map((edk) => ({
    key_provider: {
      provider_id: Buffer.from(edk.providerId, 'utf8').toString('base64'),
      // Raw keyrings put binary data (key name, IV length, IV) in the provider info; rawInfo keeps its bytes.
      key_info: edk.rawInfo ? b64(edk.rawInfo) : Buffer.from(edk.providerInfo, 'utf8').toString('base64'),
    },
    encrypted_data_key: b64(edk.encryptedDataKey),
  }))
  edks.sort((a, b) => compare(canonicalJson(a), canonicalJson(b)))
  return {
    version: isV1 ? '1.0' : '2.0',
    type: isV1 ? (header as { type: number }).type : null,
    algorithm: algorithmName(header.suiteId),
    message_id: b64(header.messageId),
    encryption_context: { ...header.encryptionContext },
    encrypted_data_keys: edks,
    content_type: header.contentType,
    header_iv_length: isV1 ? (header as { headerIvLength: number }).headerIvLength : null,
    frame_length: header.frameLength,
    commitment_key: isV1 ? null : b64((header as { suiteData: Uint8Array }).suiteData),
  }
}

export interface MetadataRecord {
  /** null only for a verify record of a file whose header could not be read (not a message, truncated). */
  header: HeaderRecord | null
  header_auth?: { iv: string; tag: string }
  input: string
  /** null for verify, which writes no output. */
  output: string | null
  mode: Mode
  /** verify only: whether the message authenticated completely (and matched its plaintext, with --against). */
  verified?: boolean
  error?: string
}

export function metadataRecord(args: { header?: MessageHeader; headerAuth?: HeaderAuth; input: string; output: string; mode: Mode; error?: string }): MetadataRecord {
  const verifying = args.mode === 'verify'
  return {
    header: args.header ? headerRecord(args.header) : null,
    ...(args.mode !== 'encrypt' && args.headerAuth ? { header_auth: { iv: b64(args.headerAuth.iv), tag: b64(args.headerAuth.tag) } } : {}),
    input: args.input,
    mode: args.mode,
    output: verifying ? null : args.output,
    ...(verifying ? { verified: args.error === undefined } : {}),
    ...(args.error ? { error: args.error } : {}),
  }
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

/** JSON as Python's json.dumps(sort_keys=True) writes it: keys sorted at every level, `, ` and `: `
 *  separators, non-ASCII escaped as \uXXXX. */
export function canonicalJson(value: unknown): string {
  if (value === null || value === undefined) return 'null'
  if (typeof value === 'string') return asciiJsonString(value)
  if (typeof value === 'number' || typeof value === 'boolean') return JSON.stringify(value)
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(', ')}]`
  const entries = Object.keys(value as object)
    .sort()
    .filter((key) => (value as Record<string, unknown>)[key] !== undefined)
    .map((key) => `${asciiJsonString(key)}: ${canonicalJson((value as Record<string, unknown>)[key])}`)
  return `{${entries.join(', ')}}`
}

function asciiJsonString(text: string): string {
  return JSON.stringify(text).replace(/[\u0080-\uffff]/g, (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`)
}

export interface MetadataSink {
  write(record: MetadataRecord): void
  close(): Promise<void>
}

/** `target`: a file path, `-` for stdout, or undefined (suppressed). Appends unless `overwrite`. */
export function openMetadataSink(target: string | undefined, overwrite: boolean): MetadataSink {
  if (target === undefined) return { write() {}, close: async () => {} }
  if (target === '-') {
    return {
      write: (record) => void process.stdout.write(canonicalJson(record) + '\n'),
      close: async () => {},
    }
  }
  const stream: WriteStream = createWriteStream(target, { flags: overwrite ? 'w' : 'a' })
  let failure: Error | undefined
  stream.on('error', (err) => (failure ??= err))
  return {
    write: (record) => void stream.write(canonicalJson(record) + '\n'),
    close: () =>
      new Promise<void>((resolve, reject) => {
        // end()'s callback gets the write error (ENOSPC) as its argument, possibly before the 'error' event.
        stream.end((err?: Error | null) => (err ?? failure ? reject(err ?? failure) : resolve()))
      }),
  }
}
