// The message engine: turns one plaintext stream into one AWS Encryption SDK message and back.
// It knows nothing of flags, files or S3 (as age's internal/stream): callers hand it a byte source,
// a Writable and a materials manager.
//
// Output contract, which sinks rely on to never expose unauthenticated data:
//   - the engine calls `output.end()` only after the whole message was written (encrypt) or fully
//     authenticated, signature included (decrypt);
//   - on any failure it rejects and never ends `output`; the caller destroys/aborts the sink.
import type { Writable } from 'node:stream'
import type { AlgorithmSuiteIdentifier, NodeMaterialsManager, MessageHeader } from '@aws-crypto/client-node'
import { deserializeFactory } from '@aws-crypto/serialize'
import { CommitmentPolicy, NodeAlgorithmSuite } from '@aws-crypto/material-management-node'
import { EnvcryptError, IntegrityError, describeError } from '../errors.js'
import { signedRefusal } from './algorithms.js'

export type ByteSource = AsyncIterable<Uint8Array>

export interface EncryptMessageOptions {
  cmm: NodeMaterialsManager
  commitmentPolicy: CommitmentPolicy
  suiteId?: AlgorithmSuiteIdentifier
  frameLength: number
  encryptionContext: Record<string, string>
  /** Plaintext size when known in advance; the caching materials manager needs it to count bytes. */
  plaintextLength?: number
  maxEncryptedDataKeys?: number | false
}

export interface HeaderAuth {
  iv: Uint8Array
  tag: Uint8Array
}

export interface ParsedHeader {
  header: MessageHeader
  headerAuth: HeaderAuth
  /** Serialized header plus header auth, in bytes. */
  headerLength: number
}

export interface DecryptMessageOptions {
  cmm: NodeMaterialsManager
  commitmentPolicy: CommitmentPolicy
  /** `forbid-signed` is `--decrypt-unsigned`: refuse messages that carry a signature. */
  signaturePolicy?: 'allow' | 'forbid-signed'
  maxEncryptedDataKeys?: number | false
  /** `--max-length`: the largest frame (or non-framed body) accepted. */
  maxBodySize?: number
  /** Called once the header is parsed, before any key is unwrapped or plaintext written.
   *  Throw to refuse the message (for example an encryption-context mismatch). */
  onHeader?: (parsed: ParsedHeader) => void | Promise<void>
  /** The output keeps nothing (verify's sinks, which drop or compare): a non-framed body's plaintext may reach
   *  it before its tag is checked, so it is never held whole in memory. Nothing else changes. */
  outputKeepsNothing?: boolean
}

export interface MessageResult {
  header: MessageHeader
  /** Present on decrypt (the metadata stream reports it); encrypt leaves it undefined. */
  headerAuth?: HeaderAuth
  bytesIn: number
  bytesOut: number
}

export interface Engine {
  readonly name: string
  encrypt(input: ByteSource, output: Writable, options: EncryptMessageOptions): Promise<MessageResult>
  decrypt(input: ByteSource, output: Writable, options: DecryptMessageOptions): Promise<MessageResult>
}

// ---------- helpers shared by engines ----------

/** Write respecting backpressure; rejects if the sink fails. */
export function writeTo(output: Writable, chunk: Uint8Array): Promise<void> | void {
  if (output.destroyed) throw output.errored ?? new EnvcryptError('output closed before the message was complete')
  if (output.write(chunk)) return
  return new Promise<void>((resolve, reject) => {
    const cleanup = () => {
      output.off('drain', onDrain)
      output.off('error', onError)
      output.off('close', onClose)
    }
    const onDrain = () => (cleanup(), resolve())
    const onError = (err: Error) => (cleanup(), reject(err))
    const onClose = () => (cleanup(), reject(new EnvcryptError('output closed before the message was complete')))
    output.on('drain', onDrain)
    output.on('error', onError)
    output.on('close', onClose)
  })
}

/** End the output and wait until it has flushed (or failed). */
export function endOutput(output: Writable): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (err: Error) => reject(err)
    output.once('error', onError)
    output.end(() => {
      output.off('error', onError)
      resolve()
    })
  })
}

const deserialize = deserializeFactory((bytes: Uint8Array) => Buffer.from(bytes).toString('utf8'), NodeAlgorithmSuite)

/** Try to parse a complete header (with its auth tag) at the start of `buffer`; false if more bytes are needed.
 *  Throws on a malformed header. The SDK's parser checks the EDK count before allocating per-key data. */
export function parseHeader(buffer: Uint8Array, maxEncryptedDataKeys: number | false = false): ParsedHeader | false {
  const info = deserialize.deserializeMessageHeader(buffer, { maxEncryptedDataKeys })
  if (!info) return false
  return {
    header: info.messageHeader,
    headerAuth: { iv: info.headerAuth.headerIv, tag: info.headerAuth.headerAuthTag },
    headerLength: info.rawHeader.byteLength + info.headerAuth.headerAuthLength,
  }
}

/** Headers are small; anything beyond this without a complete header is not a message we accept. */
const MAX_HEADER_BYTES = 16 * 1024 * 1024

/** An error the SDK raised while reading a message (its parsers, keyrings and verifiers throw plain Errors, and
 *  a TypeError on some hostile bytes) as the IntegrityError it is, same text, the original as its cause. AWS
 *  service errors, system errors and envcrypt's own typed errors pass unchanged. */
export function asRefusal(err: unknown): unknown {
  if (!(err instanceof Error) || err instanceof EnvcryptError) return err
  if ((err as { $metadata?: unknown }).$metadata !== undefined || (err as { code?: unknown }).code !== undefined) return err
  if (err.constructor !== Error && !(err instanceof TypeError) && !(err instanceof RangeError)) return err
  return new IntegrityError(describeError(err), { cause: err })
}

/** parseHeader, with the SDK parser's refusals (plain Errors, or a TypeError on hostile bytes) as IntegrityError:
 *  a malformed header is a refused message, whatever the parser's way of saying so. */
function parseOrRefuse(buffer: Uint8Array, maxEncryptedDataKeys: number | false): ParsedHeader | false {
  try {
    return parseHeader(buffer, maxEncryptedDataKeys)
  } catch (err) {
    throw asRefusal(err)
  }
}

/** Read from `iterator` until a complete header is parsed. Returns the header and the bytes read so far. */
export async function readHeader(
  iterator: AsyncIterator<Uint8Array>,
  maxEncryptedDataKeys: number | false,
): Promise<{ parsed: ParsedHeader; buffered: Buffer }> {
  // A hostile header can claim up to MAX_HEADER_BYTES; re-parsing (and re-copying) everything on every chunk
  // would cost quadratic time and memory, so the parse is retried only each time the bytes read have doubled.
  let buffered: Buffer = Buffer.alloc(0)
  const pending: Buffer[] = []
  let total = 0
  let nextAttempt = 1
  for (;;) {
    const next = await iterator.next()
    if (!next.done) {
      pending.push(Buffer.from(next.value))
      total += next.value.byteLength
    }
    if (total > 0 && (next.done || total >= nextAttempt || total > MAX_HEADER_BYTES)) {
      buffered = pending.length === 1 && buffered.length === 0 ? pending[0] : Buffer.concat([buffered, ...pending], total)
      pending.length = 0
      const parsed = parseOrRefuse(buffered, maxEncryptedDataKeys)
      if (parsed) return { parsed, buffered }
      nextAttempt = Math.min(total * 2, MAX_HEADER_BYTES)
    }
    if (next.done) throw new IntegrityError(total === 0 ? 'empty input: not an AWS Encryption SDK message' : 'truncated or invalid message header')
    if (total > MAX_HEADER_BYTES) throw new IntegrityError('not an AWS Encryption SDK message (no valid header in the first 16 MiB)')
  }
}

/** Re-chunk a byte source into pieces of exactly `size` bytes (the last one shorter). */
async function* rechunk(source: ByteSource, size: number): AsyncGenerator<Buffer> {
  let pending: Buffer[] = []
  let pendingLength = 0
  for await (const chunk of source) {
    let piece = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
    while (pendingLength + piece.length >= size) {
      const take = size - pendingLength
      pending.push(piece.subarray(0, take))
      yield pending.length === 1 ? pending[0] : Buffer.concat(pending, size)
      pending = []
      pendingLength = 0
      piece = piece.subarray(take)
    }
    if (piece.length > 0) {
      // Copy: the source may reuse its buffer after we yield control.
      pending.push(Buffer.from(piece))
      pendingLength += piece.length
    }
  }
  if (pendingLength > 0) yield Buffer.concat(pending, pendingLength)
}

async function* prepend(first: Uint8Array, rest: AsyncIterator<Uint8Array>): AsyncGenerator<Uint8Array> {
  if (first.length > 0) yield first
  for (;;) {
    const next = await rest.next()
    if (next.done) return
    yield next.value
  }
}

/** Pass `source` (a whole message, header first) through unchanged, refusing any byte after the message's end.
 *  The SDK's stream stops reading at the final frame of an unsigned message and ignores what follows, while
 *  docs/SECURITY.md promises that every engine refuses trailing data; this walks only the framing (lengths),
 *  leaving every check of the content to the SDK. */
async function* refuseTrailingBytes(source: AsyncIterable<Uint8Array>, parsed: ParsedHeader): AsyncGenerator<Uint8Array> {
  const suite = new NodeAlgorithmSuite(parsed.header.suiteId)
  const ivLength = suite.ivLength
  const tagLength = suite.tagLength / 8
  const framed = parsed.header.contentType === 2
  let skip = parsed.headerLength
  let want = framed ? 4 : ivLength + 8
  let field = Buffer.alloc(0)
  // An object, not a variable: `next` changes the phase, which TypeScript's narrowing would not see.
  const state: { phase: 'frame' | 'final' | 'single' | 'footer' | 'end' } = { phase: framed ? 'frame' : 'single' }
  const next = (bytes: Buffer): void => {
    if (state.phase === 'frame' && bytes.readUInt32BE(0) !== 0xffffffff) {
      skip = ivLength + parsed.header.frameLength + tagLength
      want = 4
    } else if (state.phase === 'frame') {
      state.phase = 'final'
      want = 4 + ivLength + 4
    } else if (state.phase === 'final' || state.phase === 'single') {
      const contentLength = state.phase === 'final' ? bytes.readUInt32BE(bytes.length - 4) : Number(bytes.readBigUInt64BE(bytes.length - 8))
      skip = contentLength + tagLength
      state.phase = suite.signatureCurve ? 'footer' : 'end'
      want = suite.signatureCurve ? 2 : 0
    } else {
      skip = bytes.readUInt16BE(0)
      state.phase = 'end'
      want = 0
    }
  }
  for await (const chunk of source) {
    let at = 0
    while (at < chunk.length) {
      if (skip > 0) {
        const step = Math.min(skip, chunk.length - at)
        skip -= step
        at += step
      } else if (state.phase === 'end') {
        throw new IntegrityError('unexpected data after the end of the message')
      } else {
        const step = Math.min(want - field.length, chunk.length - at)
        field = Buffer.concat([field, chunk.subarray(at, at + step)])
        at += step
        if (field.length === want) {
          const bytes = field
          field = Buffer.alloc(0)
          next(bytes)
        }
      }
    }
    yield chunk
  }
}

// ---------- the reference engine: the SDK's own streams ----------

// Loaded on first use: the pool engine's worker threads import this module's helpers and should not pay for
// the whole client (with the KMS SDK) at start-up.
const buildClient: typeof import('@aws-crypto/client-node').buildClient = (...args) => clientNode!.buildClient(...args)
let clientNode: typeof import('@aws-crypto/client-node') | undefined
const loadClient = async () => (clientNode ??= await import('@aws-crypto/client-node'))

/** Runs the SDK's stream `sdkStream`, feeding it `input` and copying its output into `output`. */
async function pumpThrough(
  sdkStream: NodeJS.ReadWriteStream & { on(event: string, fn: (...args: any[]) => void): unknown },
  input: ByteSource,
  output: Writable,
): Promise<number> {
  // On any failure we stop feeding and reading and leave the SDK's streams paused, never destroyed: destroying
  // them (which leaving a for-await loop does) makes their inner pipeline throw "Premature close" where no
  // listener reaches it, and the process dies.
  let streamError: Error | undefined
  let stopReading: () => void = () => undefined
  let stopFeeding: () => void = () => undefined
  const feederStopped = new Promise<void>((resolve) => (stopFeeding = resolve))
  const fail = (err: Error) => {
    // Writing to a stream the SDK has just destroyed fails with ERR_STREAM_DESTROYED before the SDK's own
    // error (the cause) arrives: keep the cause.
    if (!streamError || isDestroyedWrite(streamError)) streamError = err
    stopFeeding()
    stopReading()
  }
  sdkStream.on('error', fail)
  // A destroyed SDK stream reports its error (or closes) on a later tick.
  const untilSettled = new Promise<void>((resolve) => {
    sdkStream.once('close', () => resolve())
    sdkStream.once('error', () => resolve())
  })
  const feeding = (async () => {
    try {
      for await (const chunk of input) {
        if (streamError) return
        if ((sdkStream as { destroyed?: boolean }).destroyed) return await untilSettled
        if (!sdkStream.write(chunk)) {
          await Promise.race([new Promise<void>((resolve) => sdkStream.once('drain', resolve)), feederStopped])
        }
      }
      if (!streamError) sdkStream.end()
    } catch (err) {
      fail(err as Error)
    }
  })()
  let bytesOut = 0
  await new Promise<void>((resolve) => {
    stopReading = resolve
    const stream = sdkStream as unknown as NodeJS.ReadableStream
    stream.on('data', (chunk: Buffer) => {
      stream.pause()
      bytesOut += chunk.length
      new Promise<void>((resolve) => resolve(writeTo(output, chunk))).then(() => stream.resume(), fail)
    })
    stream.once('end', () => resolve())
  })
  await feeding
  if (streamError) throw streamError
  return bytesOut
}

function isDestroyedWrite(err: Error): boolean {
  return (err as { code?: string }).code === 'ERR_STREAM_DESTROYED'
}

function countingSource(source: ByteSource, counter: { bytes: number }): AsyncGenerator<Uint8Array> {
  return (async function* () {
    for await (const chunk of source) {
      counter.bytes += chunk.length
      yield chunk
    }
  })()
}

export const sdkEngine: Engine = {
  name: 'sdk',

  async encrypt(input, output, options) {
    await loadClient()
    const client = buildClient({ commitmentPolicy: options.commitmentPolicy, maxEncryptedDataKeys: options.maxEncryptedDataKeys ?? false })
    const stream = client.encryptStream(options.cmm, {
      suiteId: options.suiteId,
      encryptionContext: options.encryptionContext,
      frameLength: options.frameLength,
      plaintextLength: options.plaintextLength,
    })
    let header: MessageHeader | undefined
    stream.once('MessageHeader', (h: MessageHeader) => (header = h))
    const counter = { bytes: 0 }
    // Pieces that never cross a frame boundary avoid an SDK 5.0.2 bug with plaintextLength (FACTS.md).
    const bytesOut = await pumpThrough(stream as any, countingSource(rechunk(input, options.frameLength), counter), output)
    if (!header) throw new EnvcryptError('encryption produced no header')
    await endOutput(output)
    return { header, bytesIn: counter.bytes, bytesOut }
  },

  async decrypt(input, output, options) {
    const maxEdks = options.maxEncryptedDataKeys ?? false
    const iterator = input[Symbol.asyncIterator]()
    const { parsed, buffered } = await readHeader(iterator, maxEdks)
    if (options.onHeader) await options.onHeader(parsed)
    // Refused here, as the other engines do, rather than by the SDK stream, whose message names the suite by its JavaScript name.
    if (options.signaturePolicy === 'forbid-signed' && new NodeAlgorithmSuite(parsed.header.suiteId).signatureCurve) throw new IntegrityError(signedRefusal(parsed.header.suiteId))
    await loadClient()
    const client = buildClient({ commitmentPolicy: options.commitmentPolicy, maxEncryptedDataKeys: maxEdks })
    const streamOptions = options.maxBodySize ? { maxBodySize: options.maxBodySize } : undefined
    const stream = options.signaturePolicy === 'forbid-signed'
      ? client.decryptUnsignedMessageStream(options.cmm, streamOptions)
      : client.decryptStream(options.cmm, streamOptions)
    const counter = { bytes: 0 }
    const source = countingSource(refuseTrailingBytes(prepend(buffered, iterator), parsed), counter)
    const bytesOut = await pumpThrough(stream as any, source, output).catch((err) => Promise.reject(asRefusal(err)))
    await endOutput(output)
    return { header: parsed.header, headerAuth: parsed.headerAuth, bytesIn: counter.bytes, bytesOut }
  },
}
