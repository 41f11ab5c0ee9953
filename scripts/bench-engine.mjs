#!/usr/bin/env node
// Throughput of the SDK-stream engine vs the js engine (JavaScript frame loop, and the native kernel when it
// built), in memory (no disk), one message, one thread.
// Run after `npx tsc -p tsconfig.json`:  node scripts/bench-engine.mjs [MiB=256] [frameLength=4096]
import { Writable } from 'node:stream'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import {
  AlgorithmSuiteIdentifier,
  CommitmentPolicy,
  NodeDefaultCryptographicMaterialsManager,
  RawAesKeyringNode,
  RawAesWrappingSuiteIdentifier,
} from '@aws-crypto/client-node'
import { sdkEngine } from '../dist/message/engine.js'
import { jsEngine } from '../dist/message/engine-js.js'
import { nativeActive, nativeLoadError } from '../dist/message/native.js'

const mib = Number(process.argv[2] ?? 256)
const frameLength = Number(process.argv[3] ?? 4096)
const READ_CHUNK = 64 * 1024 // what fs.createReadStream hands out

let key
try {
  key = new Uint8Array(readFileSync(new URL('../fixtures/vectors/python-cli/key.bin', import.meta.url)))
} catch {
  key = new Uint8Array(randomBytes(32))
}
const cmm = () =>
  new NodeDefaultCryptographicMaterialsManager(
    new RawAesKeyringNode({ keyName: 'bench', keyNamespace: 'bench', unencryptedMasterKey: key, wrappingSuite: RawAesWrappingSuiteIdentifier.AES256_GCM_IV12_TAG16_NO_PADDING }),
  )

async function* slices(buffers, size) {
  for (const buffer of buffers) for (let at = 0; at < buffer.length; at += size) yield buffer.subarray(at, at + size)
}

class Collect extends Writable {
  constructor(keep) {
    super({ highWaterMark: 4 * 1024 * 1024 })
    this.keep = keep
    this.chunks = []
    this.bytes = 0
  }
  _write(chunk, _enc, done) {
    this.bytes += chunk.length
    if (this.keep) this.chunks.push(chunk)
    done()
  }
}

async function timed(fn) {
  const start = process.hrtime.bigint()
  const result = await fn()
  return { seconds: Number(process.hrtime.bigint() - start) / 1e9, result }
}

const plaintext = randomBytes(mib * 1024 * 1024)
const MB = plaintext.length / 1e6
const suites = [
  ['signed', AlgorithmSuiteIdentifier.ALG_AES256_GCM_IV12_TAG16_HKDF_SHA512_COMMIT_KEY_ECDSA_P384],
  ['unsigned', AlgorithmSuiteIdentifier.ALG_AES256_GCM_IV12_TAG16_HKDF_SHA512_COMMIT_KEY],
]
const hasNative = nativeActive()
console.log(`${mib} MiB in memory, ${frameLength}-byte frames, ${READ_CHUNK / 1024} KiB input pieces, Node ${process.version}`)
console.log(`native kernel: ${hasNative ? 'active' : `not available (${nativeLoadError() ?? 'ENVCRYPT_NATIVE=0'})`}`)
const initialSwitch = process.env.ENVCRYPT_NATIVE
// Engine runs: the SDK's streams, engine-js on its JavaScript loop, engine-js on the native kernel.
const variants = [
  { name: 'sdk', engine: sdkEngine, native: '0' },
  { name: 'js', engine: jsEngine, native: '0' },
  ...(hasNative ? [{ name: 'native', engine: jsEngine, native: initialSwitch ?? '1' }] : []),
]
for (const [label, suiteId] of suites) {
  const rates = {}
  let ciphertext
  for (const variant of variants) {
    process.env.ENVCRYPT_NATIVE = variant.native
    const out = new Collect(variant.name === 'js')
    const enc = await timed(() =>
      variant.engine.encrypt(slices([plaintext], READ_CHUNK), out, { cmm: cmm(), commitmentPolicy: CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT, suiteId, frameLength, encryptionContext: { bench: 'yes' } }),
    )
    if (variant.name === 'js') ciphertext = out.chunks
    rates[`${variant.name} encrypt`] = MB / enc.seconds
  }
  for (const variant of variants) {
    process.env.ENVCRYPT_NATIVE = variant.native
    const out = new Collect(false)
    const dec = await timed(() => variant.engine.decrypt(slices(ciphertext, READ_CHUNK), out, { cmm: cmm(), commitmentPolicy: CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT }))
    if (out.bytes !== plaintext.length) throw new Error(`${variant.name} decrypt returned ${out.bytes} bytes`)
    rates[`${variant.name} decrypt`] = MB / dec.seconds
  }
  for (const op of ['encrypt', 'decrypt']) {
    const sdk = rates[`sdk ${op}`]
    const js = rates[`js ${op}`]
    const native = rates[`native ${op}`]
    const nativeColumn = native === undefined ? '' : `   native ${native.toFixed(1).padStart(7)} MB/s   native/js ${(native / js).toFixed(1)}x`
    console.log(`${label.padEnd(8)} ${op}: sdk ${sdk.toFixed(1).padStart(7)} MB/s   js ${js.toFixed(1).padStart(7)} MB/s   js/sdk ${(js / sdk).toFixed(1)}x${nativeColumn}`)
  }
}
if (initialSwitch === undefined) delete process.env.ENVCRYPT_NATIVE
else process.env.ENVCRYPT_NATIVE = initialSwitch
