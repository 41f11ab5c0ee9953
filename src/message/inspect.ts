// `envcrypt inspect`: what a message says about itself, read from its header alone: no key, no decryption.
// The JSON form is exactly the metadata stream's `header` object, so the same jq filters apply to both.
import { createReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import { NodeAlgorithmSuite } from '@aws-crypto/material-management-node'
import { readHeader } from './engine.js'
import { EnvcryptError } from '../errors.js'
import { canonicalJson, headerRecord, type HeaderRecord } from './metadata.js'

export interface InspectResult {
  /** The path as given (`<stdin>` for `-`). */
  input: string
  /** The metadata stream's `header` object for this message. */
  header: HeaderRecord
  algorithmId: number
  signed: boolean
  keyCommitting: boolean
  /** Serialized header plus its authentication tag, in bytes. */
  headerLength: number
}

/** Read and parse the header of one encrypted file (`-` is stdin). Throws on anything that is not a message. */
export async function inspectFile(path: string, options: { maxEncryptedDataKeys?: number } = {}): Promise<InspectResult> {
  if (path !== '-' && (await stat(path)).isDirectory()) {
    throw new EnvcryptError('is a directory (inspect takes files; a shell glob such as dir/* lists several)')
  }
  const stream = path === '-' ? process.stdin : createReadStream(path, { highWaterMark: 64 * 1024 })
  const iterator = stream[Symbol.asyncIterator]() as AsyncIterator<Uint8Array>
  try {
    const { parsed } = await readHeader(iterator, options.maxEncryptedDataKeys ?? false)
    const suite = new NodeAlgorithmSuite(parsed.header.suiteId)
    return {
      input: path === '-' ? '<stdin>' : path,
      header: headerRecord(parsed.header),
      algorithmId: parsed.header.suiteId,
      signed: Boolean(suite.signatureCurve),
      keyCommitting: suite.commitment !== 'NONE',
      headerLength: parsed.headerLength,
    }
  } finally {
    if (stream !== process.stdin) (stream as ReturnType<typeof createReadStream>).destroy()
  }
}

/** One JSON line, `{"input": PATH, "header": {...}}`, keys sorted as in the metadata stream. */
export function inspectJsonLine(result: InspectResult): string {
  return canonicalJson({ input: result.input, header: result.header })
}

/** A readable block for a terminal: one `label  value` row per field. */
export function renderInspectTable(result: InspectResult): string {
  const h = result.header
  const framing = h.content_type === 2 ? `framed, ${h.frame_length}-byte frames` : 'non-framed'
  const traits = [result.signed ? 'signed (ECDSA)' : 'unsigned', result.keyCommitting ? 'key commitment' : 'no key commitment']
  const rows: Array<[string, string]> = [
    ['algorithm', `${h.algorithm} (0x${result.algorithmId.toString(16).padStart(4, '0')})`],
    ['', traits.join(', ')],
    ['version', `${h.version}, ${framing}`],
    ['message id', h.message_id],
  ]
  const context = Object.entries(h.encryption_context)
  if (context.length === 0) rows.push(['context', '(empty)'])
  context.forEach(([key, value], index) => rows.push([index === 0 ? 'context' : '', `${key}=${value}`]))
  rows.push(['data keys', String(h.encrypted_data_keys.length)])
  h.encrypted_data_keys.forEach((edk, index) => {
    const provider = Buffer.from(edk.key_provider.provider_id, 'base64')
    rows.push([`  #${index + 1}`, describeKeyProvider(provider, Buffer.from(edk.key_provider.key_info, 'base64'))])
  })
  const width = Math.max(...rows.map(([label]) => label.length))
  return [result.input, ...rows.map(([label, value]) => `  ${label.padEnd(width)}  ${value}`)].join('\n')
}

/** Text when the bytes are printable UTF-8 (key names, ARNs), else base64. */
function describeBytes(bytes: Buffer): string {
  const text = bytes.toString('utf8')
  return text.includes('\ufffd') || /[\x00-\x1f\x7f]/.test(text) ? `base64:${bytes.toString('base64')}` : text
}

/** `provider P, key K`, as the table shows a data key's provider (also used to explain a failed unwrap). */
export function describeKeyProvider(providerId: Buffer, keyInfo: Buffer): string {
  return `provider ${describeBytes(providerId)}, key ${describeKeyInfo(keyInfo)}`
}

const RAW_AES_IV_LENGTH = 12
const RAW_AES_TAG_BITS = 128

/** The key name in a data key's key info: raw AES keyrings store `name || tag bits (4 bytes) || IV length
 *  (4 bytes) || IV`; other providers store the name (or ARN) alone. */
export function keyNameOf(info: Buffer): { name: Buffer; rawAes: boolean } {
  const nameLength = info.length - 8 - RAW_AES_IV_LENGTH
  if (nameLength >= 1 && info.readUInt32BE(nameLength) === RAW_AES_TAG_BITS && info.readUInt32BE(nameLength + 4) === RAW_AES_IV_LENGTH) {
    return { name: info.subarray(0, nameLength), rawAes: true }
  }
  return { name: info, rawAes: false }
}

function describeKeyInfo(info: Buffer): string {
  const { name, rawAes } = keyNameOf(info)
  return rawAes ? `${describeBytes(name)} (raw AES, ${RAW_AES_TAG_BITS / 8}-byte tag, ${RAW_AES_IV_LENGTH}-byte IV)` : describeBytes(info)
}
