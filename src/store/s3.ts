// S3 as a source and sink (`s3://bucket/prefix`): listing, streamed downloads, and streamed multipart
// uploads that never touch the local disk. An object becomes visible only once its upload completes, which
// the engine triggers only when the message is complete (encrypt) or authenticated (decrypt); a failed
// file aborts its multipart upload, so neither a partial object nor orphaned parts remain.
import { readFileSync, statSync } from 'node:fs'
import { Transform, type Readable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  S3Client,
  StorageClass,
  type HeadObjectCommandOutput,
  type PutObjectCommandInput,
} from '@aws-sdk/client-s3'
import { Upload } from '@aws-sdk/lib-storage'
import type { ByteSource } from '../message/engine.js'
import { EnvcryptError, UsageError } from '../errors.js'
import { warnAboutKeyFileMode } from '../keys/file-mode.js'
import type { InputItem, OutputTarget, OutputWriter } from './local.js'
import type { Store } from './plan.js'
import { VERSION } from '../version.js'

export interface S3StoreOptions {
  /** `--s3-endpoint`; otherwise the standard chain (`AWS_ENDPOINT_URL_S3`, profiles). */
  endpoint?: string
  /** `--s3-force-path-style`, for MinIO/Ceph-style stores. */
  forcePathStyle?: boolean
  /** `--sse`: `AES256`, `aws:kms` or `aws:kms:dsse`. */
  sse?: string
  /** `--sse-kms-key-id`, with `--sse aws:kms`. */
  sseKmsKeyId?: string
  /** `--sse-c-key fileb://PATH`: a 32-byte customer key, sent on uploads and reads alike. */
  sseCustomerKey?: string
  /** Where a warning about the SSE-C key file's permissions goes. */
  warn?: (message: string) => void
  /** `--storage-class`. */
  storageClass?: string
  /** Recorded as `envcrypt-format` on uploads; default `aws-encryption-sdk-message`. */
  objectFormat?: string
  /** Multipart part size in bytes (default 8 MiB; S3's minimum is 5 MiB). */
  partSize?: number
  /** Parts in flight per upload (default 4). */
  queueSize?: number
  /** Attempts per request, including the first (default 8). */
  maxAttempts?: number
}

const S3_PART_SIZE = 8 * 1024 * 1024
const SSE_VALUES = ['AES256', 'aws:kms', 'aws:kms:dsse']
/** Object metadata names (sent as `x-amz-meta-*`). Never a plaintext hash: metadata is readable without the key. */
const META = {
  version: 'envcrypt-version',
  format: 'envcrypt-format',
  sourceSize: 'envcrypt-source-size',
  sourceMtime: 'envcrypt-source-mtime-ms',
} as const

interface S3Location {
  bucket: string
  key: string
}

function parseS3Uri(uri: string): S3Location {
  const match = /^s3:\/\/([^/]+)(?:\/(.*))?$/s.exec(uri)
  if (!match) throw new UsageError(`${uri}: not an s3://bucket/key URI`)
  return { bucket: match[1], key: match[2] ?? '' }
}

const formatUri = (location: S3Location) => `s3://${location.bucket}/${location.key}`

/** Parameters every request on an object carries when SSE-C is in use (S3 refuses reads without them). */
// The key goes as base64; the SDK adds its MD5 header.
type CustomerKeyParams = { SSECustomerAlgorithm?: string; SSECustomerKey?: string }

export function s3Store(options: S3StoreOptions = {}): Store {
  const uploadParams = checkUploadOptions(options)
  const customerKey: CustomerKeyParams = options.sseCustomerKey
    ? { SSECustomerAlgorithm: 'AES256', SSECustomerKey: readCustomerKey(options.sseCustomerKey, options.warn).toString('base64') }
    : {}
  let client: S3Client | undefined
  // Built on first use, so that flags are checked (and tests can run) without any AWS configuration.
  const getClient = () =>
    (client ??= new S3Client({
      ...(options.endpoint ? { endpoint: options.endpoint } : {}),
      ...(options.forcePathStyle ? { forcePathStyle: true } : {}),
      // Default flexible checksums store aws-chunked framing verbatim on some S3-compatible stores
      // (FACTS.md: s3rver); checksums only where S3 requires them is byte-exact everywhere.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      retryMode: 'standard',
      maxAttempts: options.maxAttempts ?? 8,
      requestHandler: { connectionTimeout: 10_000, socketTimeout: 120_000 },
    }))
  const context: StoreContext = {
    getClient,
    customerKey,
    uploadParams,
    objectFormat: options.objectFormat ?? 'aws-encryption-sdk-message',
    partSize: options.partSize ?? S3_PART_SIZE,
    queueSize: options.queueSize ?? 4,
  }

  return {
    matches: (uri) => uri.startsWith('s3://'),
    isTreeUri: (uri) => {
      const { key } = parseS3Uri(uri)
      return key === '' || key.endsWith('/')
    },
    join: (base, relPath) => (base.endsWith('/') ? base : base + '/') + relPath,
    output: (uri) => s3Output(parseS3Uri(uri), context),
    listInputs: (uri, recursive) => listInputs(uri, recursive, context),
    inputAt: (base, relPath, size) => {
      checkRelativePath(relPath, base + relPath)
      const location = parseS3Uri((base.endsWith('/') ? base : base + '/') + relPath)
      return s3Input(location, relPath, size, undefined, context)
    },
    readText: async (uri) => {
      const chunks: Buffer[] = []
      for await (const chunk of await readObject(parseS3Uri(uri), context)) chunks.push(Buffer.from(chunk))
      return Buffer.concat(chunks).toString('utf8')
    },
  }
}

interface StoreContext {
  getClient: () => S3Client
  customerKey: CustomerKeyParams
  uploadParams: Partial<PutObjectCommandInput>
  objectFormat: string
  partSize: number
  queueSize: number
}

function checkUploadOptions(options: S3StoreOptions): Partial<PutObjectCommandInput> {
  const params: Partial<PutObjectCommandInput> = {}
  if (options.sse !== undefined) {
    if (!SSE_VALUES.includes(options.sse)) throw new UsageError(`--sse must be one of ${SSE_VALUES.join(', ')} (got "${options.sse}")`)
    if (options.sseCustomerKey) throw new UsageError('--sse and --sse-c-key exclude each other')
    params.ServerSideEncryption = options.sse as PutObjectCommandInput['ServerSideEncryption']
  }
  if (options.sseKmsKeyId !== undefined) {
    if (!options.sse?.startsWith('aws:kms')) throw new UsageError('--sse-kms-key-id needs --sse aws:kms (or aws:kms:dsse)')
    params.SSEKMSKeyId = options.sseKmsKeyId
  }
  if (options.storageClass !== undefined) {
    const classes = Object.values(StorageClass) as string[]
    if (!classes.includes(options.storageClass)) throw new UsageError(`--storage-class must be one of ${classes.join(', ')} (got "${options.storageClass}")`)
    params.StorageClass = options.storageClass as PutObjectCommandInput['StorageClass']
  }
  if (options.partSize !== undefined && (!Number.isInteger(options.partSize) || options.partSize < 5 * 1024 * 1024)) {
    throw new UsageError('S3 part size must be an integer of at least 5 MiB')
  }
  return params
}

function readCustomerKey(spec: string, warn: (message: string) => void = () => undefined): Buffer {
  if (!spec.startsWith('fileb://')) throw new UsageError(`--sse-c-key must be fileb://PATH of a 32-byte key file (got "${spec.slice(0, 40)}")`)
  const path = spec.slice('fileb://'.length)
  let key: Buffer
  try {
    key = readFileSync(path)
    warnAboutKeyFileMode(path, statSync(path).mode, true, warn)
  } catch (err) {
    throw new UsageError(`--sse-c-key: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
  }
  if (key.length !== 32) throw new UsageError(`--sse-c-key: ${path} holds ${key.length} bytes; SSE-C needs exactly 32`)
  return key
}

// ---------- inputs ----------

async function listInputs(uri: string, recursive: boolean, context: StoreContext): Promise<{ items: InputItem[]; isTree: boolean }> {
  const location = parseS3Uri(uri)
  if (location.key === '' || location.key.endsWith('/')) {
    return { items: await listPrefix(location, context), isTree: true }
  }
  if (recursive) {
    // As `aws s3 cp --recursive`: a name without a trailing slash is a prefix if anything is under it.
    const items = await listPrefix({ bucket: location.bucket, key: location.key + '/' }, context)
    if (items.length > 0) return { items, isTree: true }
  }
  const head = await headObject(location, context)
  if (!head) throw new EnvcryptError(`${uri}: no such object`)
  const name = location.key.split('/').pop()!
  checkRelativePath(name, uri)
  return { items: [s3Input(location, name, head.ContentLength, head.LastModified, context)], isTree: false }
}

async function listPrefix(prefix: S3Location, context: StoreContext): Promise<InputItem[]> {
  const items: InputItem[] = []
  let continuationToken: string | undefined
  do {
    const page = await context
      .getClient()
      .send(new ListObjectsV2Command({ Bucket: prefix.bucket, Prefix: prefix.key, ContinuationToken: continuationToken }))
      .catch((err) => {
        throw s3Error('list', formatUri(prefix), err)
      })
    for (const object of page.Contents ?? []) {
      const key = object.Key
      // Keys ending in `/` are "directory markers" made by consoles and tools, not files.
      if (key === undefined || key.endsWith('/')) continue
      const location = { bucket: prefix.bucket, key }
      const relPath = key.slice(prefix.key.length)
      checkRelativePath(relPath, formatUri(location))
      items.push(s3Input(location, relPath, object.Size, object.LastModified, context))
    }
    continuationToken = page.IsTruncated ? page.NextContinuationToken : undefined
    if (page.IsTruncated && !continuationToken) throw new EnvcryptError(`listing ${formatUri(prefix)}: truncated page without a continuation token`)
  } while (continuationToken)
  // Servers page in different orders (s3rver: file-system order); a stable order keeps runs reproducible.
  items.sort((a, b) => (a.relPath < b.relPath ? -1 : a.relPath > b.relPath ? 1 : 0))
  return items
}

/** Keys become local paths on download: refuse any that could land outside the output directory. */
function checkRelativePath(relPath: string, uri: string): void {
  const refuse = (why: string) => {
    throw new EnvcryptError(`${JSON.stringify(uri)}: unsafe object key (${why}); refusing to download anything from this listing`)
  }
  if (relPath.includes('\\')) refuse('contains a backslash')
  if (relPath.includes('\0')) refuse('contains a NUL character')
  if (relPath.startsWith('/')) refuse('absolute path')
  for (const segment of relPath.split('/')) {
    if (segment === '..') refuse('a ".." segment')
    if (segment === '.' || segment === '') refuse('an empty or "." path segment')
  }
}

function s3Input(location: S3Location, relPath: string, size: number | undefined, lastModified: Date | undefined, context: StoreContext): InputItem {
  return {
    display: formatUri(location),
    relPath,
    size,
    mtimeMs: lastModified?.getTime(),
    open: async () => readObject(location, context),
    remove: () => deleteObject(location, context),
    // S3 answers a delete of a missing key with success.
    removeSidecar: (suffix) => deleteObject({ bucket: location.bucket, key: location.key + suffix }, context),
  }
}

async function deleteObject(location: S3Location, context: StoreContext): Promise<void> {
  await context
    .getClient()
    .send(new DeleteObjectCommand({ Bucket: location.bucket, Key: location.key }))
    .catch((err) => {
      throw s3Error('delete', formatUri(location), err)
    })
}

const MAX_RESUMES = 5

/** GetObject's body; a connection lost mid-body resumes with a ranged GET pinned to the same ETag. */
async function readObject(location: S3Location, context: StoreContext): Promise<ByteSource> {
  const uri = formatUri(location)
  const get = (offset: number, etag?: string) =>
    context
      .getClient()
      .send(new GetObjectCommand({ Bucket: location.bucket, Key: location.key, ...context.customerKey, ...(offset > 0 ? { Range: `bytes=${offset}-`, IfMatch: etag } : {}) }))
      .catch((err) => {
        throw s3Error('read', uri, err)
      })
  // The first request happens here, so that a missing object fails before any output is opened.
  const first = await get(0)
  const etag = first.ETag
  const total = first.ContentLength
  const body = (async function* () {
    let response = first
    let offset = 0
    for (let resumes = 0; ; resumes++) {
      try {
        for await (const chunk of response.Body as Readable) {
          offset += chunk.length
          yield chunk as Buffer
        }
        if (total === undefined || offset === total) return
        throw Object.assign(new Error(`body ended after ${offset} of ${total} bytes`), { code: 'ECONNRESET' })
      } catch (err) {
        if (!isConnectionError(err) || resumes >= MAX_RESUMES) throw s3Error('read', uri, err)
        await sleep(Math.random() * 200 * 2 ** resumes)
        response = await get(offset, etag)
      }
    }
  })()
  // The object's user metadata (x-amz-meta-*, names lowercased): S3 Encryption Client envelopes live there.
  return Object.assign(body, { userMetadata: first.Metadata ?? {} })
}

function isConnectionError(err: unknown): boolean {
  const code = (err as { code?: string })?.code
  return ['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ERR_STREAM_PREMATURE_CLOSE', 'ECONNREFUSED'].includes(code ?? '') || /aborted|socket hang up/i.test((err as Error)?.message ?? '')
}

// ---------- outputs ----------

async function headObject(location: S3Location, context: StoreContext): Promise<HeadObjectCommandOutput | undefined> {
  try {
    return await context.getClient().send(new HeadObjectCommand({ Bucket: location.bucket, Key: location.key, ...context.customerKey }))
  } catch (err) {
    if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return undefined
    throw s3Error('check', formatUri(location), err)
  }
}

function s3Output(location: S3Location, context: StoreContext): OutputTarget & { isUpToDate(input: InputItem): Promise<boolean> } {
  const uri = formatUri(location)
  if (location.key === '' || location.key.endsWith('/')) throw new UsageError(`${uri}: an object key cannot end with /`)
  return {
    display: uri,
    exists: async () => (await headObject(location, context)) !== undefined,
    // As `aws s3 sync`: same size and modification time means unchanged; here both are the source's own,
    // recorded on upload, since the object's size and date differ from the plaintext's by design.
    isUpToDate: async (input) => {
      if (input.size === undefined || input.mtimeMs === undefined) return false
      const head = await headObject(location, context)
      const metadata = head?.Metadata ?? {}
      return metadata[META.sourceSize] === String(input.size) && metadata[META.sourceMtime] === String(Math.trunc(input.mtimeMs))
    },
    open: async ({ source, noClobber }) => openUpload(location, context, source, noClobber ?? false),
  }
}

/** The object's metadata: envcrypt's version and object format, and the source's size and mtime (--sync). */
function uploadMetadata(context: StoreContext, source: { size?: number; mtimeMs?: number } | undefined): Record<string, string> {
  const metadata: Record<string, string> = { [META.version]: VERSION, [META.format]: context.objectFormat }
  if (source?.size !== undefined) metadata[META.sourceSize] = String(source.size)
  if (source?.mtimeMs !== undefined) metadata[META.sourceMtime] = String(Math.trunc(source.mtimeMs))
  return metadata
}

/** The upload of `body` to `location` through lib-storage (multipart once it is large). */
function startUpload(
  location: S3Location,
  context: StoreContext,
  body: Transform,
  source: { size?: number; mtimeMs?: number } | undefined,
  noClobber: boolean,
): Upload {
  return new Upload({
    client: context.getClient(),
    params: {
      Bucket: location.bucket,
      Key: location.key,
      Body: body,
      ContentType: 'application/octet-stream',
      Metadata: uploadMetadata(context, source),
      ...context.uploadParams,
      ...context.customerKey,
      ...(noClobber ? { IfNoneMatch: '*' } : {}),
    },
    partSize: context.partSize,
    queueSize: context.queueSize,
    leavePartsOnError: false,
  })
}

function openUpload(location: S3Location, context: StoreContext, source: { size?: number; mtimeMs?: number } | undefined, noClobber: boolean): OutputWriter {
  const uri = formatUri(location)
  // --no-overwrite: S3 itself refuses the write (PutObject or CompleteMultipartUpload) if the key exists by
  // then, closing the window between the HEAD check and the end of the upload.
  const uploadError = (err: unknown) =>
    noClobber && (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 412
      ? new EnvcryptError(`output ${uri} already exists (not overwritten)`)
      : s3Error('upload', uri, err)
  let bytesWritten = 0
  // A counting pass-through: lib-storage wants a node:stream Readable body (FACTS.md).
  const body = new Transform({
    highWaterMark: 1024 * 1024,
    transform(chunk: Buffer, _encoding, callback) {
      bytesWritten += chunk.length
      callback(null, chunk)
    },
  })
  // Errors surface through the engine's writes and through commit(); this only keeps an unobserved
  // 'error' event from crashing the process.
  body.on('error', () => undefined)
  const upload = startUpload(location, context, body, source, noClobber)
  let uploadResult: 'pending' | 'completed' | 'failed' = 'pending'
  const uploaded = upload.done().then(
    () => {
      uploadResult = 'completed'
    },
    (err) => {
      uploadResult = 'failed'
      // Unblock the engine if it is waiting for the body to drain.
      body.destroy(uploadError(err))
      throw err
    },
  )
  uploaded.catch(() => undefined)
  let state: 'open' | 'committed' | 'aborting' = 'open'
  let aborting: Promise<void> | undefined

  return {
    stream: body,
    async commit() {
      if (state !== 'open') throw new EnvcryptError(`output ${uri} already ${state}`)
      await uploaded.catch((err) => {
        throw uploadError(err)
      })
      // A store that mangled the body (FACTS.md: aws-chunked framing) shows up as a wrong size.
      const head = await headObject(location, context)
      if (head?.ContentLength !== bytesWritten) {
        throw new EnvcryptError(`uploaded ${uri} is ${head?.ContentLength ?? 'missing'} bytes, expected ${bytesWritten}; the object was removed`)
      }
      state = 'committed'
    },
    abort() {
      if (state === 'committed') return Promise.resolve()
      state = 'aborting'
      aborting ??= (async () => {
        // Failing the body makes lib-storage stop, wait for parts in flight, then AbortMultipartUpload.
        // (`upload.abort()` would settle done() at once, before the abort request is sent.)
        if (!body.writableEnded) body.destroy(new EnvcryptError(`upload of ${uri} aborted`))
        await uploaded.catch(() => undefined)
        // The body was complete and the object exists, but the file failed afterwards (a size check).
        if (uploadResult === 'completed') {
          await context
            .getClient()
            .send(new DeleteObjectCommand({ Bucket: location.bucket, Key: location.key }))
            .catch(() => undefined)
        }
      })()
      return aborting
    },
  }
}

/** One line naming the operation, the object and the service's error code. */
function s3Error(operation: string, uri: string, err: unknown): EnvcryptError {
  if (err instanceof EnvcryptError) return err
  const e = err as { name?: string; message?: string; $metadata?: { httpStatusCode?: number } }
  const status = e.$metadata?.httpStatusCode
  const name = e.name && e.name !== 'Error' ? e.name : undefined
  const detail = [name, status && `HTTP ${status}`].filter(Boolean).join(', ')
  const message = e.message && e.message !== name && e.message !== 'UnknownError' ? e.message : ''
  return new EnvcryptError(`S3 ${operation} ${uri} failed${detail ? ` (${detail})` : ''}${message ? `: ${message}` : ''}`, { cause: err })
}
