// Signing key pairs for signed messages, made ahead of time off the main thread.
//
// Without caching, every signed message needs a fresh ECDSA key pair, and its public key must be in the
// encryption context before the keyring wraps the data key, so the materials manager (on the main thread)
// needs it first. Making it there (~0.7 ms of P-384) plus the SDK's asn1.js PEM encoding (~0.4 ms) was the
// main thread's largest cost per small file, while the pool's workers waited for work. So the pool registers
// a source here (its workers make key pairs in batches, asked for ahead of need), the materials manager waits
// for one per message, and without a source it makes one itself, as the SDK does. Each key pair is used
// once and its scalar zeroed.
import { createECDH } from 'node:crypto'

/** A source of `count` key pairs for `curve`: records of scalar (field size) || compressed point (1 + field size). */
export type SigningKeyPairSource = (curve: string, count: number) => Promise<Uint8Array>

export interface SigningKeyPair {
  /** The private scalar, big-endian, padded to the field size. */
  scalar: Buffer
  /** The compressed public point, as the SDK puts it (base64) in the encryption context. */
  compressPoint: Buffer
}

const FIELD_BYTES: Record<string, number> = { secp384r1: 48, prime256v1: 32 }
/** DER of each curve's OID (RFC 5915 parameters). */
const CURVE_OIDS: Record<string, Buffer> = {
  secp384r1: Buffer.from('06052b81040022', 'hex'),
  prime256v1: Buffer.from('06082a8648ce3d030107', 'hex'),
}
/** Ask for more when fewer than this are left (about the files in flight); batches grow while in demand. */
const LOW_WATER = 64
const BATCH_SIZES = [8, 32, 64]

let source: SigningKeyPairSource | undefined

/** The pool registers its workers here (undefined: stop using them). */
export function provideSigningKeyPairs(next: SigningKeyPairSource | undefined): void {
  source = next
  if (!next) for (const stash of stashes.values()) stash.pairs.splice(0).forEach((pair) => pair.scalar.fill(0))
}

interface Stash {
  pairs: SigningKeyPair[]
  /** Takers waiting for the next batch, served in order. */
  waiting: Array<(pair: SigningKeyPair) => void>
  pending: number
  batches: number
}
const stashes = new Map<string, Stash>()

/** Counts for tests: key pairs that came from the source, and those made here because none was ready. */
export const signingKeyStats = { fromSource: 0, madeHere: 0 }

function refill(curve: string, stash: Stash): void {
  const fieldBytes = FIELD_BYTES[curve]
  // One batch in flight at a time, two when takers are already waiting.
  if (!source || !fieldBytes || stash.pending > (stash.waiting.length > 0 ? 1 : 0) || stash.pairs.length >= LOW_WATER) return
  const count = BATCH_SIZES[Math.min(stash.batches, BATCH_SIZES.length - 1)]!
  stash.pending++
  stash.batches++
  source(curve, count).then(
    (records) => {
      const bytes = Buffer.from(records.buffer, records.byteOffset, records.byteLength)
      const size = 2 * fieldBytes + 1
      for (let at = 0; at + size <= bytes.length; at += size) {
        stash.pairs.push({ scalar: Buffer.from(bytes.subarray(at, at + fieldBytes)), compressPoint: Buffer.from(bytes.subarray(at + fieldBytes, at + size)) })
      }
      bytes.fill(0)
      stash.pending--
      while (stash.waiting.length > 0 && stash.pairs.length > 0) {
        signingKeyStats.fromSource++
        stash.waiting.shift()!(stash.pairs.pop()!)
      }
      // Still in demand (the batch was used up at once): ask for the next one now.
      if (stash.pairs.length === 0) refill(curve, stash)
    },
    () => {
      // A source that failed (the pool closed) is not asked again; whoever waits makes their own.
      stash.pending--
      source = undefined
      for (const resolve of stash.waiting.splice(0)) resolve(makeHere(curve))
    },
  )
}

function makeHere(curve: string): SigningKeyPair {
  signingKeyStats.madeHere++
  const ecdh = createECDH(curve)
  ecdh.generateKeys()
  const fieldBytes = FIELD_BYTES[curve]
  const raw = ecdh.getPrivateKey()
  const scalar = fieldBytes && raw.length < fieldBytes ? Buffer.concat([Buffer.alloc(fieldBytes - raw.length), raw]) : raw
  return { scalar, compressPoint: ecdh.getPublicKey(undefined, 'compressed') }
}

function stashFor(curve: string): Stash {
  let stash = stashes.get(curve)
  if (!stash) stashes.set(curve, (stash = { pairs: [], waiting: [], pending: 0, batches: 0 }))
  return stash
}

/** A key pair nobody else has: from the stash, or the next one the source makes when there is a source
 *  (so the main thread does not spend its time on it), else made here. */
export function nextSigningKeyPair(curve: string): SigningKeyPair | Promise<SigningKeyPair> {
  const stash = stashFor(curve)
  refill(curve, stash)
  const ready = stash.waiting.length === 0 ? stash.pairs.pop() : undefined
  if (ready) {
    signingKeyStats.fromSource++
    return ready
  }
  if (!source || !FIELD_BYTES[curve]) return makeHere(curve)
  return new Promise((resolve) => {
    stash.waiting.push(resolve)
    refill(curve, stash)
  })
}

/** Synchronously: from the stash if one is ready, else made here. */
export function takeSigningKeyPair(curve: string): SigningKeyPair {
  const stash = stashFor(curve)
  refill(curve, stash)
  const ready = stash.waiting.length === 0 ? stash.pairs.pop() : undefined
  if (!ready) return makeHere(curve)
  signingKeyStats.fromSource++
  return ready
}

/** The RFC 5915 "EC PRIVATE KEY" PEM the SDK's SignatureKey holds (its pem_helpers privateKeyPem, which
 *  encodes with asn1.js at ~0.4 ms a key): SEQUENCE { 1, scalar, [0] curve OID, [1] BIT STRING point }.
 *  Every length is below 128 for the SDK's curves, so each fits in one byte. */
export function ecPrivateKeyPem(curve: string, scalar: Uint8Array, compressPoint: Uint8Array): string {
  const oid = CURVE_OIDS[curve]
  if (!oid) throw new Error(`unsupported curve ${curve}`)
  const tlv = derTlv
  const der = tlv(0x30, Buffer.from([0x02, 0x01, 0x01]), tlv(0x04, scalar), tlv(0xa0, oid), tlv(0xa1, tlv(0x03, Buffer.from([0]), compressPoint)))
  const base64 = der.toString('base64')
  der.fill(0)
  const lines = base64.match(/.{1,64}/g) ?? []
  return ['-----BEGIN EC PRIVATE KEY-----', ...lines, '-----END EC PRIVATE KEY-----', ''].join('\n')
}

/** DER of the id-ecPublicKey algorithm OID (SPKI). */
const EC_PUBLIC_KEY_OID = Buffer.from('06072a8648ce3d0201', 'hex')

/** The SPKI "PUBLIC KEY" PEM the SDK's VerificationKey holds (its pem_helpers publicKeyPem, asn1.js at ~0.4 ms
 *  a key on the main thread for every signed message it decrypts): SEQUENCE { SEQUENCE { id-ecPublicKey,
 *  curve OID }, BIT STRING point }. Every length is below 128 for the SDK's curves. */
export function ecPublicKeyPem(curve: string, point: Uint8Array): string {
  const oid = CURVE_OIDS[curve]
  if (!oid) throw new Error(`unsupported curve ${curve}`)
  const der = derTlv(0x30, derTlv(0x30, EC_PUBLIC_KEY_OID, oid), derTlv(0x03, Buffer.from([0]), point))
  const lines = der.toString('base64').match(/.{1,64}/g) ?? []
  return ['-----BEGIN PUBLIC KEY-----', ...lines, '-----END PUBLIC KEY-----', ''].join('\n')
}

function derTlv(tag: number, ...parts: Uint8Array[]): Buffer {
  const body = Buffer.concat(parts)
  if (body.length > 127) throw new Error('internal: key too long for a one-byte DER length')
  return Buffer.concat([Buffer.from([tag, body.length]), body])
}
