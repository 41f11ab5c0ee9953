// Materials for one message, with the SDK's policy checks: resolving them may call KMS and runs on the main
// thread; the frame loops (encrypt.ts, decrypt.ts) get the result and may run on a worker.
import {
  CommitmentPolicy,
  CommitmentPolicySuites,
  NodeAlgorithmSuite,
  SignaturePolicy,
  SignaturePolicySuites,
  needs,
  type NodeDecryptionMaterial,
  type NodeEncryptionMaterial,
} from '@aws-crypto/material-management-node'
import { ContentType, Maximum, type MessageHeader } from '@aws-crypto/serialize'
import { asRefusal, type DecryptMessageOptions, type EncryptMessageOptions, type ParsedHeader } from './engine.js'
import { EnvcryptError, IntegrityError } from '../errors.js'
import { algorithmName, signedRefusal } from './algorithms.js'

/** Validate the options and get encryption materials from the materials manager, with the SDK's checks
 *  (encrypt_stream.js): valid policy and maxEncryptedDataKeys, frame length bounds, the requested and the
 *  returned suite allowed by the commitment policy, EDK count. No suite requested: the CMM picks the
 *  policy's default. */
export async function resolveEncryptionMaterials(options: EncryptMessageOptions): Promise<NodeEncryptionMaterial> {
  const { commitmentPolicy, frameLength, plaintextLength } = options
  const maxEncryptedDataKeys = options.maxEncryptedDataKeys ?? false
  needs(CommitmentPolicy[commitmentPolicy], 'Invalid commitment policy.')
  needs(maxEncryptedDataKeys === false || maxEncryptedDataKeys >= 1, 'Invalid maxEncryptedDataKeys value.')
  checkFrameLength(frameLength)
  if (plaintextLength !== undefined && !(plaintextLength >= 0 && plaintextLength <= Maximum.BYTES_PER_MESSAGE)) {
    throw new EnvcryptError(`plaintext length ${plaintextLength} out of bounds`)
  }
  const suite = options.suiteId !== undefined ? new NodeAlgorithmSuite(options.suiteId) : undefined
  if (suite) checkEncryptSuite(commitmentPolicy, suite)
  const material = await options.cmm.getEncryptionMaterials({
    suite,
    encryptionContext: options.encryptionContext,
    plaintextLength,
    commitmentPolicy,
  })
  try {
    checkEncryptSuite(commitmentPolicy, material.suite)
    if (maxEncryptedDataKeys !== false && material.encryptedDataKeys.length > maxEncryptedDataKeys) {
      throw new EnvcryptError(
        `the keyrings produced ${material.encryptedDataKeys.length} encrypted data keys; maxEncryptedDataKeys allows ${maxEncryptedDataKeys}`,
      )
    }
  } catch (err) {
    material.zeroUnencryptedDataKey()
    throw err
  }
  return material
}

export function checkFrameLength(frameLength: number): void {
  if (!(Number.isInteger(frameLength) && frameLength > 0 && frameLength <= Maximum.FRAME_SIZE)) {
    throw new EnvcryptError(`frame length ${frameLength} out of bounds (1 to ${Maximum.FRAME_SIZE})`)
  }
}

function checkEncryptSuite(commitmentPolicy: CommitmentPolicy, suite: NodeAlgorithmSuite): void {
  try {
    CommitmentPolicySuites.isEncryptEnabled(commitmentPolicy, suite)
  } catch {
    throw new EnvcryptError(`algorithm suite ${algorithmName(suite.id)} is not allowed for encryption by commitment policy ${policyName(commitmentPolicy)}`)
  }
}

function policyName(policy: string | undefined): string {
  return (policy ?? '').toLowerCase().replace(/_/g, '-')
}

/** The SDK's decrypt-side checks on a parsed header: the suite must be allowed by the commitment policy and,
 *  for `forbid-signed`, be unsigned. Also refuses a frame length above `maxBodySize` before anything is
 *  buffered (as the Python CLI's --max-length does). */
export function checkDecryptHeader(parsed: ParsedHeader, options: Pick<DecryptMessageOptions, 'commitmentPolicy' | 'signaturePolicy' | 'maxBodySize'>): NodeAlgorithmSuite {
  const { header } = parsed
  const suite = new NodeAlgorithmSuite(header.suiteId)
  checkDecryptSuite(suite, options, header)
  if (header.contentType !== ContentType.FRAMED_DATA && header.contentType !== ContentType.NO_FRAMING) {
    throw new IntegrityError(`malformed message header: unknown content type ${header.contentType}`)
  }
  if (options.maxBodySize && header.contentType === ContentType.FRAMED_DATA && header.frameLength > options.maxBodySize) {
    throw new EnvcryptError(`frame length ${header.frameLength} exceeds the maximum body size ${options.maxBodySize} (--max-length)`)
  }
  return suite
}

function checkDecryptSuite(
  suite: NodeAlgorithmSuite,
  options: Pick<DecryptMessageOptions, 'commitmentPolicy' | 'signaturePolicy'>,
  header: MessageHeader,
): void {
  const messageId = Buffer.from(header.messageId).toString('hex')
  try {
    CommitmentPolicySuites.isDecryptEnabled(options.commitmentPolicy, suite, messageId)
  } catch {
    throw new IntegrityError(
      `message uses algorithm suite ${algorithmName(suite.id)}, which commitment policy ${policyName(options.commitmentPolicy)} refuses for decryption`,
    )
  }
  const signaturePolicy = options.signaturePolicy === 'forbid-signed' ? SignaturePolicy.ALLOW_ENCRYPT_FORBID_DECRYPT : SignaturePolicy.ALLOW_ENCRYPT_ALLOW_DECRYPT
  try {
    SignaturePolicySuites.isDecryptEnabled(signaturePolicy, suite, messageId)
  } catch {
    throw new IntegrityError(signedRefusal(suite.id))
  }
}

/** Unwrap the data key for a parsed header through the materials manager (may call KMS), re-checking the
 *  returned suite against the policies as the SDK's ParseHeaderStream does. */
export async function resolveDecryptionMaterials(
  parsed: ParsedHeader,
  options: Pick<DecryptMessageOptions, 'cmm' | 'commitmentPolicy' | 'signaturePolicy'>,
): Promise<NodeDecryptionMaterial> {
  const { header } = parsed
  const suite = new NodeAlgorithmSuite(header.suiteId)
  // A key no wrapping key opens, or a header whose public key does not decode, is a refused message.
  const material = await options.cmm
    .decryptMaterials({ suite, encryptionContext: header.encryptionContext, encryptedDataKeys: header.encryptedDataKeys })
    .catch((err: unknown) => Promise.reject(asRefusal(err)))
  try {
    checkDecryptSuite(material.suite, options, header)
  } catch (err) {
    material.zeroUnencryptedDataKey()
    throw err
  }
  return material
}
