// When no given key unwraps a message's data key, say which keys the message was wrapped for (as `inspect`
// shows them) next to the keys that were given, and spot the common slip: the right key name under another
// raw-key namespace (a missing `namespace=`).
import type { MessageHeader } from '@aws-crypto/client-node'
import { describeKeyProvider, keyNameOf } from '../message/inspect.js'
import type { WrappingKeySpec } from './keyrings.js'

const UNWRAP_FAILURE = 'no wrapping key could decrypt the data key'

/** The SDK's bare "no keyring produced a data key" (its internal `unencryptedDataKey has not been set`), as
 *  opposed to a KMS error that already says what went wrong (DisabledException, AccessDenied, credentials). */
export function isBareUnwrapFailure(description: string): boolean {
  return description.startsWith(UNWRAP_FAILURE) && /unencryptedDataKey has not been set/.test(description)
}

export function explainUnwrapFailure(header: MessageHeader, specs: readonly WrappingKeySpec[]): string {
  const wrapped = header.encryptedDataKeys.map((edk) => ({
    providerId: Buffer.from(edk.providerId, 'utf8'),
    keyInfo: Buffer.from(edk.rawInfo ?? Buffer.from(edk.providerInfo, 'utf8')),
  }))
  const given = specs.map(describeSpec).join('; ')
  const parts = [`${UNWRAP_FAILURE}: the message was wrapped for ${wrapped.map((w) => describeKeyProvider(w.providerId, w.keyInfo)).join('; ')}; given: ${given}`]
  const namespace = namespaceSlip(wrapped, specs)
  if (namespace !== undefined) parts.push(`only the namespace differs: use namespace=${namespace}`)
  else if (wrapped.some((w) => sameRawKeyName(w, specs))) {
    parts.push(specs.some((spec) => spec.provider === 'raw-rsa') ? 'a given key has that name but other key material or RSA padding (padding= must be the writer\'s)' : 'a given key has that name but other key material (or the message was altered)')
  }
  return parts.join('; ')
}

function describeSpec(spec: WrappingKeySpec): string {
  if (spec.discovery) return 'aws-kms discovery=true'
  if (spec.provider === 'aws-kms') return spec.keys.map((key) => `aws-kms key=${key}`).join(', ')
  return spec.keys.map((key) => `${spec.provider} namespace=${spec.namespace} key=${key}`).join(', ')
}

function sameRawKeyName(w: { providerId: Buffer; keyInfo: Buffer }, specs: readonly WrappingKeySpec[]): boolean {
  const { name, rawAes } = keyNameOf(w.keyInfo)
  return specs.some((spec) => spec.provider === (rawAes ? 'raw-aes' : 'raw-rsa') && spec.namespace === w.providerId.toString('utf8') && spec.keys.includes(name.toString('utf8')))
}

/** The message's namespace when a given raw key has the message's key name under another namespace. */
function namespaceSlip(wrapped: ReadonlyArray<{ providerId: Buffer; keyInfo: Buffer }>, specs: readonly WrappingKeySpec[]): string | undefined {
  for (const { providerId, keyInfo } of wrapped) {
    const namespace = providerId.toString('utf8')
    const { name, rawAes } = keyNameOf(keyInfo)
    const slip = specs.some((spec) => spec.provider === (rawAes ? 'raw-aes' : 'raw-rsa') && spec.namespace !== namespace && spec.keys.includes(name.toString('utf8')))
    if (slip) return namespace
  }
  return undefined
}
