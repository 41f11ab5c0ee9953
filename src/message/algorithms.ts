// Algorithm suite names as aws-encryption-cli prints and accepts them, mapped to the JavaScript SDK's enum.
// The JS names differ only by the `ALG_` prefix and `AES256` vs `AES_256`, so the table is derived.
import { AlgorithmSuiteIdentifier, CommitmentPolicy } from '@aws-crypto/material-management'
import { UsageError } from '../errors.js'

function cliName(jsName: string): string {
  return jsName.replace(/^ALG_/, '').replace(/^AES(\d+)_/, 'AES_$1_')
}

const idByName = new Map<string, AlgorithmSuiteIdentifier>()
const nameById = new Map<number, string>()
for (const [jsName, id] of Object.entries(AlgorithmSuiteIdentifier)) {
  if (typeof id !== 'number') continue
  idByName.set(cliName(jsName), id as AlgorithmSuiteIdentifier)
  nameById.set(id, cliName(jsName))
}
// The committing suites' CLI names drop the IV/tag part: AES_256_GCM_HKDF_SHA512_COMMIT_KEY[_ECDSA_P384].
for (const [name, id] of [...idByName]) {
  if (name.includes('COMMIT_KEY')) {
    const short = name.replace('_IV12_TAG16', '')
    idByName.delete(name)
    idByName.set(short, id)
    nameById.set(id, short)
  }
}

export const ALGORITHM_NAMES: readonly string[] = [...idByName.keys()]

/** Whether `head` (a file's first bytes) starts like an Encryption SDK message, raw or base64 (`--encode`):
 *  version 1 (type 0x80) or 2, then a known suite id. */
export function startsLikeMessage(head: Uint8Array): boolean {
  const bytes = /^[A-Za-z0-9+/]{4}/.test(Buffer.from(head.subarray(0, 4)).toString('latin1')) ? Buffer.from(Buffer.from(head.subarray(0, 8)).toString('latin1'), 'base64') : head
  const suite = (at: number) => bytes.length >= at + 2 && nameById.has((bytes[at]! << 8) | bytes[at + 1]!)
  return (bytes[0] === 1 && bytes[1] === 0x80 && suite(2)) || (bytes[0] === 2 && suite(1))
}

/** What `--decrypt-unsigned` says about a signed message, the suite by aws-encryption-cli's name (every engine). */
export function signedRefusal(id: number): string {
  return `message is signed (algorithm suite ${algorithmName(id)}); --decrypt-unsigned accepts unsigned messages only`
}

export function algorithmName(id: number): string {
  return nameById.get(id) ?? `UNKNOWN_0x${id.toString(16).padStart(4, '0')}`
}

export function parseAlgorithm(name: string): AlgorithmSuiteIdentifier {
  const id = idByName.get(name.toUpperCase())
  if (id === undefined) throw new UsageError(`--algorithm: unknown suite "${name}"; one of ${ALGORITHM_NAMES.join(', ')}`)
  return id
}

export const COMMITMENT_POLICIES = {
  'forbid-encrypt-allow-decrypt': CommitmentPolicy.FORBID_ENCRYPT_ALLOW_DECRYPT,
  'require-encrypt-allow-decrypt': CommitmentPolicy.REQUIRE_ENCRYPT_ALLOW_DECRYPT,
  'require-encrypt-require-decrypt': CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT,
} as const

export type CommitmentPolicyName = keyof typeof COMMITMENT_POLICIES

export function parseCommitmentPolicy(name: string): CommitmentPolicy {
  const policy = COMMITMENT_POLICIES[name.toLowerCase() as CommitmentPolicyName]
  if (!policy) throw new UsageError(`--commitment-policy: unknown policy "${name}"; one of ${Object.keys(COMMITMENT_POLICIES).join(', ')}`)
  return policy
}
