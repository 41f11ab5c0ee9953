// The machine's own limit, measured in the same run as the bench (a figure from another day or machine says
// nothing): a one-process copy of the dataset with one reused buffer (the I/O floor), AES-256-GCM and SHA-384
// on one core, and the all-core rates of ECDSA P-384 key pairs, signatures and verifications. A run's limit is
// the dataset's I/O floor plus its crypto work spread over the cores (for small signed files, mostly ECDSA).
import { createCipheriv, createHash, createSign, generateKeyPairSync, randomBytes } from 'node:crypto'
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from 'node:fs'
import { availableParallelism, cpus } from 'node:os'
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'

export interface MachineReference {
  cores: number
  cpu: string
  /** One core, one context, 1 MiB blocks (openssl speed style). */
  aes_256_gcm_mb_per_s: number
  sha384_mb_per_s: number
  ecdsa_p384_signs_per_s: number
  /** Every core at once (one thread per core): the ceilings for many small signed files. */
  ecdsa_p384_key_pairs_per_s_all_cores: number
  ecdsa_p384_signs_per_s_all_cores: number
  ecdsa_p384_verifies_per_s_all_cores: number
  /** Best of two one-process copies of the dataset, file by file, through one reused 1 MiB buffer. */
  io_floor_seconds: number
}

/** What one run had to do, for its limit. */
export interface RunWork {
  mode: 'encrypt' | 'decrypt'
  bytes: number
  files: number
  signed: boolean
  /** Signing key pairs made on encrypt: one per file, or one per data key with caching. */
  keyPairs: number
}

/** Repeat `step` for about `seconds`; returns steps per second. */
function rate(step: () => void, seconds = 0.5): number {
  step() // warm up
  let count = 0
  const started = performance.now()
  let elapsed = 0
  while (elapsed < seconds * 1000) {
    for (let i = 0; i < 8; i++) step()
    count += 8
    elapsed = performance.now() - started
  }
  return (count * 1000) / elapsed
}

function measureOneCore() {
  const block = randomBytes(1024 * 1024)
  const cipher = createCipheriv('aes-256-gcm', randomBytes(32), randomBytes(12))
  const aes = rate(() => void cipher.update(block)) * block.length
  const hash = createHash('sha384')
  const sha = rate(() => void hash.update(block)) * block.length
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'secp384r1' })
  const digestInput = randomBytes(64)
  const signs = rate(() => void createSign('sha384').update(digestInput).sign(privateKey))
  return {
    cores: availableParallelism(),
    cpu: cpus()[0]?.model ?? 'unknown',
    aes_256_gcm_mb_per_s: Math.round(aes / 1e6),
    sha384_mb_per_s: Math.round(sha / 1e6),
    ecdsa_p384_signs_per_s: Math.round(signs),
  }
}

// One worker thread per core, started together, each repeating one ECDSA P-384 operation.
const ALL_CORES_WORKER = `
const { parentPort, workerData } = require('node:worker_threads')
const crypto = require('node:crypto')
const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'secp384r1' })
const input = crypto.randomBytes(64)
const signature = crypto.createSign('sha384').update(input).sign(privateKey)
const steps = {
  keyPair: () => crypto.generateKeyPairSync('ec', { namedCurve: 'secp384r1' }),
  sign: () => crypto.createSign('sha384').update(input).sign(privateKey),
  verify: () => { if (!crypto.createVerify('sha384').update(input).verify(publicKey, signature)) throw new Error('verify') },
}
const step = steps[workerData.operation]
step()
parentPort.postMessage('ready')
parentPort.once('message', () => {
  let count = 0
  const started = performance.now()
  while (performance.now() - started < workerData.seconds * 1000) { step(); count++ }
  parentPort.postMessage(count / ((performance.now() - started) / 1000))
})
`

async function allCoresRate(operation: 'keyPair' | 'sign' | 'verify', seconds = 0.7): Promise<number> {
  const workers = Array.from({ length: availableParallelism() }, () => new Worker(ALL_CORES_WORKER, { eval: true, workerData: { operation, seconds } }))
  try {
    // Each sets up and says 'ready'; then all start at once.
    const next = (worker: Worker) => new Promise<unknown>((resolve, reject) => (worker.once('message', resolve), worker.once('error', reject)))
    await Promise.all(workers.map(next))
    const rates = workers.map(next)
    for (const worker of workers) worker.postMessage('start')
    return Math.round((await Promise.all(rates)).reduce<number>((sum, value) => sum + Number(value), 0))
  } finally {
    await Promise.all(workers.map((worker) => worker.terminate()))
  }
}

/** Copy every file of the dataset in this process through one reused buffer into `workDir` (where the runs
 *  write their outputs); best of two, in seconds. */
function measureIoFloor(dir: string, names: readonly string[], workDir: string): number {
  const buffer = Buffer.allocUnsafe(1024 * 1024)
  let best = Infinity
  for (let attempt = 0; attempt < 2; attempt++) {
    const copy = mkdtempSync(join(workDir, 'io-floor-'))
    try {
      const started = performance.now()
      for (const name of names) copyFile(join(dir, name), join(copy, name), buffer)
      best = Math.min(best, (performance.now() - started) / 1000)
    } finally {
      rmSync(copy, { recursive: true, force: true })
    }
  }
  return Math.round(best * 1000) / 1000
}

function copyFile(from: string, to: string, buffer: Buffer): void {
  const input = openSync(from, 'r')
  const output = openSync(to, 'wx')
  try {
    for (let read; (read = readSync(input, buffer, 0, buffer.length, null)) > 0; ) {
      for (let written = 0; written < read; ) written += writeSync(output, buffer, written, read - written)
    }
  } finally {
    closeSync(input)
    closeSync(output)
  }
}

export async function measureMachine(dataDir: string, names: readonly string[], workDir: string): Promise<MachineReference> {
  return {
    ...measureOneCore(),
    ecdsa_p384_key_pairs_per_s_all_cores: await allCoresRate('keyPair'),
    ecdsa_p384_signs_per_s_all_cores: await allCoresRate('sign'),
    ecdsa_p384_verifies_per_s_all_cores: await allCoresRate('verify'),
    io_floor_seconds: measureIoFloor(dataDir, names, workDir),
  }
}

/** The fastest this machine could do a run's work: the I/O floor, plus AES-GCM (and SHA-384 when signed)
 *  over every byte spread over the cores, plus the ECDSA operations at the all-core rates. */
export function runLimitSeconds(reference: MachineReference, work: RunWork): number {
  const perCoreSeconds = work.bytes / (reference.aes_256_gcm_mb_per_s * 1e6) + (work.signed ? work.bytes / (reference.sha384_mb_per_s * 1e6) : 0)
  let ecdsaSeconds = 0
  if (work.signed && work.mode === 'encrypt') {
    ecdsaSeconds = work.keyPairs / reference.ecdsa_p384_key_pairs_per_s_all_cores + work.files / reference.ecdsa_p384_signs_per_s_all_cores
  } else if (work.signed) {
    ecdsaSeconds = work.files / reference.ecdsa_p384_verifies_per_s_all_cores
  }
  return reference.io_floor_seconds + perCoreSeconds / reference.cores + ecdsaSeconds
}
