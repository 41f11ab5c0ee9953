/**
 * A small KMS-compatible endpoint (JSON 1.1 protocol) for tests, demos and benchmarks.
 *
 * No KMS emulator is installable on the build machines, so this speaks just enough of
 * TrentService for the AWS SDK, `KmsKeyringNode` and envcrypt itself: symmetric keys,
 * aliases, data keys, Encrypt/Decrypt/ReEncrypt and key state changes. Ciphertext blobs
 * are real AES-256-GCM under per-key secret material, with the key id and the encryption
 * context bound as AAD, so a wrong context, a wrong key or a tampered blob fails the way
 * it does against AWS. SigV4 signatures are parsed but not verified.
 *
 * This file starts and stops the server; operations.ts holds the KMS operations over a
 * key store (key-store.ts), http.ts the JSON 1.1 layer, blob.ts the ciphertext format,
 * state-file.ts the state file.
 */
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { handleRequest, type KmsService } from './http.js'
import { keyArn, newKey, resolveKey, type KeyRecord } from './key-store.js'
import { loadKeyStore, stateFileWriter } from './state-file.js'

export interface LocalKmsOptions {
  /** 0 (the default) picks a free port. */
  port?: number
  /** Default 127.0.0.1. */
  host?: string
  /** Default us-east-1, or the region recorded in `stateFile`. */
  region?: string
  /** Default '111122223333', or the account recorded in `stateFile`. */
  accountId?: string
  /** Keys and aliases are loaded from here on start and written (atomically, mode 0600) after every change. */
  stateFile?: string
  /** Fixed delay added to every request before it is answered. */
  latencyMs?: number
  /** Fraction (0..1) of requests answered with HTTP 400 ThrottlingException. */
  throttleRate?: number
  /** Fraction (0..1) of requests answered with HTTP 500 KMSInternalException (a transient server fault). */
  serverErrorRate?: number
  /** Seed for the throttling and server-error decisions, so a run is reproducible (default 1). */
  throttleSeed?: number
  /** One line per request and lifecycle event; never receives plaintext or key material. */
  log?: (line: string) => void
}

export interface LocalKms {
  /** http://HOST:PORT */
  endpoint: string
  region: string
  /** Creates an enabled symmetric key and returns its ARN. */
  createKey(description?: string): Promise<string>
  /** Accepts a key id, key ARN, alias name or alias ARN. */
  setKeyEnabled(keyArn: string, enabled: boolean): void
  /**
   * Requests answered per operation (including those answered with an error), plus
   * `Throttled`/`ServerError`: requests refused by fault injection (not counted under their operation).
   */
  counts(): Record<string, number>
  /** The most requests that were being handled at one moment (received, not yet answered) since the last
   *  resetCounts(): shows whether concurrent clients are served concurrently. */
  peakConcurrentRequests(): number
  /**
   * Answer at most `requests` more requests and hold the later ones, unanswered, until `holdAfter(undefined)`
   * (or close()). Tests use it to stop a run at an exact point: after N data keys, nothing else can finish.
   */
  holdAfter(requests: number | undefined): void
  resetCounts(): void
  /** Stops listening, drops keep-alive connections and waits for pending state-file writes. */
  close(): Promise<void>
}

/** The environment a child process (the CLI) needs to reach `kms` the standard way: its endpoint, its region,
 *  and placeholder credentials (the endpoint checks their shape, not their value); no profile is read. */
export function localKmsEnv(kms: Pick<LocalKms, 'endpoint' | 'region'>): Record<string, string> {
  return {
    AWS_ENDPOINT_URL_KMS: kms.endpoint,
    AWS_REGION: kms.region,
    AWS_ACCESS_KEY_ID: 'AKIDLOCALKMS',
    AWS_SECRET_ACCESS_KEY: 'local-kms-placeholder-secret',
    AWS_PROFILE: '',
  }
}

/** mulberry32: tiny, seedable, good enough to decide which requests to throttle. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function checkFaultOptions(options: LocalKmsOptions): { latencyMs: number; throttleRate: number; serverErrorRate: number } {
  const latencyMs = options.latencyMs ?? 0
  const throttleRate = options.throttleRate ?? 0
  if (!(latencyMs >= 0)) throw new Error(`latencyMs must be >= 0, got ${latencyMs}`)
  if (!(throttleRate >= 0 && throttleRate <= 1)) throw new Error(`throttleRate must be within 0..1, got ${throttleRate}`)
  const serverErrorRate = options.serverErrorRate ?? 0
  if (!(serverErrorRate >= 0 && serverErrorRate <= 1)) throw new Error(`serverErrorRate must be within 0..1, got ${serverErrorRate}`)
  return { latencyMs, throttleRate, serverErrorRate }
}

/** Listens on `host`:`port` (0: a free port) and returns the endpoint URL. */
async function listen(server: http.Server, host: string, port: number): Promise<string> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const address = server.address() as AddressInfo
  return `http://${host.includes(':') ? `[${host}]` : host}:${address.port}`
}

/** holdAfter(): how many more requests may be answered (undefined: no limit); the others wait until then. */
function admissionGate(): { admit(): Promise<void>; limit(requests: number | undefined): void } {
  let answerable: number | undefined
  let held: Array<() => void> = []
  return {
    async admit() {
      while (answerable !== undefined && answerable <= 0) await new Promise<void>((resolve) => held.push(resolve))
      if (answerable !== undefined) answerable--
    },
    limit(requests) {
      answerable = requests
      const wake = held
      held = []
      for (const resolve of wake) resolve()
    },
  }
}

export async function startLocalKms(options: LocalKmsOptions = {}): Promise<LocalKms> {
  const log = options.log ?? (() => undefined)
  const { latencyMs, throttleRate, serverErrorRate } = checkFaultOptions(options)
  const store = await loadKeyStore(options.stateFile, options, log)
  const stateFile = stateFileWriter(options.stateFile, store)
  let callCounts: Record<string, number> = {}
  let concurrentRequests = 0
  let peakConcurrentRequests = 0
  const gate = admissionGate()
  const faultRandom = seededRandom(options.throttleSeed ?? 1)
  let closed = false
  const service: KmsService = {
    store,
    latencyMs,
    isClosed: () => closed,
    shouldThrottle: () => throttleRate > 0 && faultRandom() < throttleRate,
    shouldFail: () => serverErrorRate > 0 && faultRandom() < serverErrorRate,
    countCall(name) {
      callCounts[name] = (callCounts[name] ?? 0) + 1
    },
    requestStarted() {
      peakConcurrentRequests = Math.max(peakConcurrentRequests, ++concurrentRequests)
    },
    admit: () => gate.admit(),
    requestEnded() {
      concurrentRequests--
    },
    persist: () => stateFile.persist(),
    log,
  }
  const server = http.createServer((request, response) => {
    void handleRequest(service, request, response)
  })
  const endpoint = await listen(server, options.host ?? '127.0.0.1', options.port ?? 0)
  log(`local-kms: listening on ${endpoint} (${store.region}, account ${store.accountId})`)

  return {
    endpoint,
    region: store.region,
    async createKey(description = '') {
      const key = newKey(store, description)
      await stateFile.persist()
      return keyArn(store, key.keyId)
    },
    setKeyEnabled(reference, enabled) {
      let key: KeyRecord
      try {
        key = resolveKey(store, reference)
      } catch (error) {
        throw new Error((error as Error).message)
      }
      if (key.state === 'PendingDeletion') throw new Error(`${keyArn(store, key.keyId)} is pending deletion`)
      key.state = enabled ? 'Enabled' : 'Disabled'
      stateFile.persist().catch((error: Error) => log(`local-kms: could not write state file: ${error.message}`))
    },
    counts: () => ({ ...callCounts }),
    peakConcurrentRequests: () => peakConcurrentRequests,
    holdAfter: (requests) => gate.limit(requests),
    resetCounts() {
      callCounts = {}
      peakConcurrentRequests = concurrentRequests
    },
    async close() {
      closed = true
      gate.limit(undefined)
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()))
      server.closeAllConnections()
      await stopped
      await stateFile.settled()
      log('local-kms: closed')
    },
  }
}

/**
 * CLI entry: `envcrypt local-kms [--port N] [--state FILE] [--create-key] [--latency-ms N] [--throttle-rate R]`.
 * Prints exactly one JSON line on stdout ({"endpoint", "keyArn" with --create-key}), logs to stderr,
 * and serves until SIGTERM or SIGINT.
 */
export async function runLocalKms(options: LocalKmsOptions & { createKey?: boolean }): Promise<void> {
  const { createKey, ...serverOptions } = options
  const log = serverOptions.log ?? ((line: string) => process.stderr.write(line + '\n'))
  const kms = await startLocalKms({ ...serverOptions, log })
  try {
    const keyArn = createKey ? await kms.createKey('created by envcrypt local-kms --create-key') : undefined
    process.stdout.write(JSON.stringify(keyArn === undefined ? { endpoint: kms.endpoint } : { endpoint: kms.endpoint, keyArn }) + '\n')
    await new Promise<void>((resolve) => {
      const stop = (signal: NodeJS.Signals): void => {
        process.off('SIGTERM', stop)
        process.off('SIGINT', stop)
        log(`local-kms: ${signal} received, shutting down`)
        resolve()
      }
      process.on('SIGTERM', stop)
      process.on('SIGINT', stop)
    })
  } finally {
    await kms.close()
  }
}
