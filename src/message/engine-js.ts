// The "js" engine: same messages as the SDK's streams, but the frame loop is ours.
// (When the optional native kernel built, the frames of each batch go through it instead: see native.ts.)
//
// Everything about keys and formats stays in the SDK: the materials manager, key derivation, key commitment,
// signer/verifier (`getEncryptHelper`/`getDecryptionHelper`) and the layouts (`@aws-crypto/serialize`).
// What we own is the hot loop. The SDK's streams spend ~90 us per 4 KiB frame in stream plumbing
// (a Transform push per header/ciphertext/tag, a setImmediate per chunk, a hash update per piece);
// here a frame costs one createCipheriv + setAAD + update + final + getAuthTag (~12 us, ~10.6 us to decrypt,
// FACTS.md), frames are packed into one buffer per ~1 MiB batch, and the signature hash is fed once per batch.
//
// Each direction is split into "get materials" (may call KMS; runs the SDK's policy checks) and
// "run the frame loop given materials" (pure CPU + I/O), so the loop can move to a worker (pool.ts):
// resolve.ts gets the materials; encrypt.ts and decrypt.ts are the loops; frames.ts what they share.
import { CommitmentPolicy, needs } from '@aws-crypto/material-management-node'
import { readHeader, type Engine } from './engine.js'
import { checkDecryptHeader, resolveDecryptionMaterials, resolveEncryptionMaterials } from './resolve.js'
import { encryptWithMaterials } from './encrypt.js'
import { decryptWithMaterials } from './decrypt.js'


export const jsEngine: Engine = {
  name: 'js',

  async encrypt(input, output, options) {
    const material = await resolveEncryptionMaterials(options)
    return encryptWithMaterials(material, input, output, { frameLength: options.frameLength, plaintextLength: options.plaintextLength })
  },

  async decrypt(input, output, options) {
    const maxEncryptedDataKeys = options.maxEncryptedDataKeys ?? false
    needs(CommitmentPolicy[options.commitmentPolicy], 'Invalid commitment policy.')
    needs(maxEncryptedDataKeys === false || maxEncryptedDataKeys >= 1, 'Invalid maxEncryptedDataKeys value.')
    const iterator = input[Symbol.asyncIterator]()
    try {
      const { parsed, buffered } = await readHeader(iterator, maxEncryptedDataKeys)
      checkDecryptHeader(parsed, options)
      // Before the materials manager: a refused header never costs a KMS call.
      if (options.onHeader) await options.onHeader(parsed)
      const material = await resolveDecryptionMaterials(parsed, options)
      return await decryptWithMaterials(material, { parsed, headerBytes: buffered, rest: iterator }, output, { maxBodySize: options.maxBodySize, outputKeepsNothing: options.outputKeepsNothing })
    } catch (err) {
      // Release the source (close a file stream) as `for await` would.
      await iterator.return?.().catch(() => undefined)
      throw err
    }
  },
}
