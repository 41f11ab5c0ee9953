// Key rotation: each message is decrypted with the old wrapping keys and its plaintext streamed straight into
// a new message under the new keys. Plaintext only ever lives in memory, a bounded buffer at a time; the new
// message is renamed into place only once the old one was fully authenticated (signature included).
import { PassThrough } from 'node:stream'
import type { MessageHeader } from '@aws-crypto/client-node'
import { parseCommitmentPolicy } from './message/algorithms.js'
import type { ByteSource } from './message/engine.js'
import { buildKeyring, parseWrappingKeySpec, type WrappingKeySpec } from './keys/keyrings.js'
import { buildMaterialsManager } from './keys/materials.js'
import { checkRequiredContext, encryptTree, type EncryptTreeOptions, type MessageStage, type MessageStageSetup, type TreeSummary } from './tree.js'

export interface ReencryptTreeOptions extends Omit<EncryptTreeOptions, 'encryptionContext' | 'messageStage' | 'encode'> {
  /** The keys that decrypt the existing messages (`-W/--from-wrapping-keys`); `wrappingKeys` are the new ones. */
  fromWrappingKeys: Array<WrappingKeySpec | string[]>
  /** Pairs each existing message must carry (as decrypt's `-c`); a `null` value only requires the key. */
  requiredContext?: Record<string, string | null>
  /** The largest frame accepted from the existing messages (`--max-length`). */
  maxLength?: number
}

/** The signing suites' public key lives in the context; the new message gets its own. */
const RESERVED_CONTEXT_KEY = 'aws-crypto-public-key'

/** Re-encrypt a tree under new wrapping keys. The encryption context of each message is carried over;
 *  the suite and frame length are the encrypt defaults unless `algorithm`/`frameLength` are given.
 *  Outputs keep their names (no suffix) unless `suffix` is given. */
export function reencryptTree(options: ReencryptTreeOptions): Promise<TreeSummary> {
  const { fromWrappingKeys, requiredContext, maxLength, ...encryptOptions } = options
  return encryptTree({
    ...encryptOptions,
    suffix: options.suffix ?? '',
    messageStage: (setup) => decryptIntoEncrypt(setup, options),
  })
}

function decryptIntoEncrypt({ engine, kmsCalls, warn, kms }: MessageStageSetup, options: ReencryptTreeOptions): MessageStage {
  const specs = options.fromWrappingKeys.map((spec) => (Array.isArray(spec) ? parseWrappingKeySpec(spec) : spec))
  const oldKeys = buildKeyring(specs, 'decrypt', { kmsCalls, warn, kmsClientConfig: options.kmsClientConfig, ...kms })
  const oldCmm = buildMaterialsManager(oldKeys.keyring, options.caching)
  const commitmentPolicy = parseCommitmentPolicy(options.commitmentPolicy ?? 'require-encrypt-require-decrypt')
  return {
    async run(input: ByteSource, output, encryptOptions) {
      // Bounded: the decryptor waits (backpressure) while the encryptor catches up.
      const plaintext = new PassThrough({ highWaterMark: 1024 * 1024 })
      // Its errors reach the caller through the decrypt and encrypt promises; without a listener they would crash.
      plaintext.on('error', () => undefined)
      let headerRead!: (header: MessageHeader) => void
      const oldHeader = new Promise<MessageHeader>((resolve) => (headerRead = resolve))
      const decrypting = engine.decrypt(input, plaintext, {
        cmm: oldCmm,
        commitmentPolicy,
        maxEncryptedDataKeys: options.maxEncryptedDataKeys ?? false,
        maxBodySize: options.maxLength,
        onHeader: (parsed) => {
          checkRequiredContext(parsed.header.encryptionContext, options.requiredContext)
          headerRead(parsed.header)
        },
      })
      // A failed decrypt must also stop the encryptor reading the plaintext, and the other way round,
      // or the survivor would wait forever on a stream nobody feeds or drains.
      decrypting.catch((err) => plaintext.destroy(err))
      const header = await Promise.race([oldHeader, decrypting.then(() => undefined)])
      if (!header) throw new Error('decrypt finished without a header')
      const encryptionContext = { ...header.encryptionContext }
      delete encryptionContext[RESERVED_CONTEXT_KEY]
      const encrypting = engine.encrypt(plaintext, output, { ...encryptOptions, encryptionContext, plaintextLength: undefined })
      encrypting.catch((err) => plaintext.destroy(err))
      const [decrypted, encrypted] = await Promise.allSettled([decrypting, encrypting])
      if (decrypted.status === 'rejected') throw decrypted.reason
      if (encrypted.status === 'rejected') throw encrypted.reason
      return { header: encrypted.value.header, bytesIn: decrypted.value.bytesIn, bytesOut: encrypted.value.bytesOut }
    },
    dispose: () => oldKeys.dispose(),
  }
}
