// The JSON 1.1 HTTP layer of the local KMS: POST / with X-Amz-Target: TrentService.<Op>, a SigV4-shaped
// Authorization header (parsed, not verified), JSON both ways, errors as {"__type", "message"}.
import type http from 'node:http'
import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import type { JsonObject } from './input.js'
import type { KeyStore } from './key-store.js'
import { KmsError } from './kms-error.js'
import { operations, type Operation } from './operations.js'

const JSON_CONTENT_TYPE = 'application/x-amz-json-1.1'
const TARGET_PREFIX = 'TrentService.'
const MAX_REQUEST_BYTES = 1024 * 1024
const SIGV4_AUTHORIZATION =
  /^AWS4-HMAC-SHA256 Credential=[^/\s,]+\/\d{8}\/([a-z0-9-]+)\/([a-z0-9-]+)\/aws4_request,\s*SignedHeaders=[a-z0-9;-]+,\s*Signature=[0-9a-f]{64}$/

/** What the HTTP layer needs from the server around it. */
export interface KmsService {
  store: KeyStore
  /** Fixed delay before each request is answered. */
  latencyMs: number
  isClosed(): boolean
  /** Fault injection: answer this request with ThrottlingException / KMSInternalException. */
  shouldThrottle(): boolean
  shouldFail(): boolean
  countCall(name: string): void
  /** Called as each request is received and once it is answered (the peak of requests in flight). */
  requestStarted(): void
  /** Resolves when the request may be answered (holdAfter in server.ts holds it until then). */
  admit(): Promise<void>
  requestEnded(): void
  /** Writes the state file; resolves once the change is on disk. */
  persist(): Promise<void>
  log(line: string): void
}

async function readBody(request: http.IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length
    if (size > MAX_REQUEST_BYTES) throw new KmsError('ValidationException', `Request body exceeds ${MAX_REQUEST_BYTES} bytes.`)
    chunks.push(chunk)
  }
  return Buffer.concat(chunks)
}

/** Checks the request envelope and returns the operation name and its JSON input. */
function parseRequest(request: http.IncomingMessage, body: Buffer, region: string): { operation: string; input: JsonObject } {
  if (request.method !== 'POST' || request.url?.split('?')[0] !== '/') {
    throw new KmsError('UnknownOperationException', `Only POST / is served, not ${request.method} ${request.url}.`)
  }
  const target = request.headers['x-amz-target']
  if (typeof target !== 'string' || !target.startsWith(TARGET_PREFIX)) {
    throw new KmsError('UnknownOperationException', 'Missing or malformed X-Amz-Target header.')
  }
  const operation = target.slice(TARGET_PREFIX.length)
  if (!Object.hasOwn(operations, operation)) throw new KmsError('UnknownOperationException', `Unknown operation ${operation}.`)
  const contentType = request.headers['content-type']?.split(';')[0]?.trim()
  if (contentType !== JSON_CONTENT_TYPE) {
    throw new KmsError('SerializationException', `Content-Type must be ${JSON_CONTENT_TYPE}, not ${contentType}.`)
  }
  const authorization = request.headers.authorization
  if (authorization === undefined) {
    throw new KmsError('MissingAuthenticationTokenException', 'Request is missing Authentication Token')
  }
  // Any credentials are accepted, but the header must be a SigV4 header scoped to this region and service.
  const scope = SIGV4_AUTHORIZATION.exec(authorization)
  if (!scope) throw new KmsError('IncompleteSignatureException', 'Authorization header is not a valid SigV4 header.')
  if (scope[1] !== region || scope[2] !== 'kms') {
    throw new KmsError('InvalidSignatureException', `Credential should be scoped to a valid region and service 'kms' (${region}).`)
  }
  let input: unknown
  try {
    input = body.length === 0 ? {} : JSON.parse(body.toString('utf8'))
  } catch {
    throw new KmsError('SerializationException', 'Request body is not valid JSON.')
  }
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new KmsError('SerializationException', 'Request body must be a JSON object.')
  }
  return { operation, input: input as JsonObject }
}

function send(response: http.ServerResponse, status: number, body: JsonObject, errorType?: string): void {
  if (response.destroyed || response.headersSent) return
  const json = JSON.stringify(body)
  response.writeHead(status, {
    'Content-Type': JSON_CONTENT_TYPE,
    'Content-Length': Buffer.byteLength(json),
    'x-amzn-RequestId': randomUUID(),
    ...(errorType ? { 'x-amzn-ErrorType': errorType } : {}),
  })
  response.end(json)
}

export async function handleRequest(service: KmsService, request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
  const started = Date.now()
  let operation = '-'
  let status = 200
  let outcome = 'ok'
  service.requestStarted()
  try {
    const body = await readBody(request)
    // Each request sleeps on its own timer, so latency never serialises concurrent requests.
    if (service.latencyMs > 0) await sleep(service.latencyMs)
    await service.admit()
    if (service.isClosed()) {
      response.destroy()
      return
    }
    if (service.shouldThrottle()) {
      service.countCall('Throttled')
      throw new KmsError('ThrottlingException', 'Rate exceeded')
    }
    if (service.shouldFail()) {
      service.countCall('ServerError')
      throw new KmsError('KMSInternalException', 'The request was rejected because an internal exception occurred.', 500)
    }
    const parsed = parseRequest(request, body, service.store.region)
    operation = parsed.operation
    service.countCall(operation)
    const implementation = operations[operation] as Operation
    const result = implementation(service.store, parsed.input)
    // The client only hears success once the change is on disk.
    if (result.mutated) await service.persist()
    send(response, status, result.body)
  } catch (error) {
    const kmsError =
      error instanceof KmsError
        ? error
        : new KmsError('KMSInternalException', 'The request was rejected because an internal exception occurred.', 500)
    if (!(error instanceof KmsError)) service.log(`local-kms: internal error in ${operation}: ${(error as Error).message}`)
    status = kmsError.status
    outcome = kmsError.type
    send(response, status, { __type: kmsError.type, message: kmsError.message }, kmsError.type)
  } finally {
    service.requestEnded()
    service.log(`local-kms: ${operation} ${status} ${outcome} ${Date.now() - started}ms`)
  }
}
