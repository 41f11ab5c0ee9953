// envcrypt against an independent reader and writer: the AWS Encryption SDK itself (`@aws-crypto/client-node`,
// in this process) decrypts what the CLI wrote and writes what the CLI must decrypt, for raw RSA (every padding),
// multi-keyrings (each key alone), KMS keys (through the project's local KMS) and reencrypt outputs, on every
// engine. envcrypt reading its own output would not catch a format bug shared by both directions.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { execFileSync } from 'node:child_process'
import { constants, generateKeyPairSync, randomBytes } from 'node:crypto'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import {
  buildClient,
  CommitmentPolicy,
  KmsKeyringNode,
  MultiKeyringNode,
  RawAesKeyringNode,
  RawAesWrappingSuiteIdentifier,
  RawRsaKeyringNode,
  type KeyringNode,
} from '@aws-crypto/client-node'
import { KMS } from '@aws-sdk/client-kms'
import { localKmsEnv, startLocalKms, type LocalKms } from '../src/local-kms/server.js'
import { listFiles, rawAesKey, ROOT, runCli, tempDir, writeTree } from './helpers/cli.js'

const ENGINES = ['pool', 'js', 'sdk'] as const
const sdk = buildClient(CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
// Two frames and a partial one, an empty file and a one-byte file: the frame edges a format bug shows at.
const FILES: Record<string, Buffer> = { 'empty.bin': Buffer.alloc(0), 'one.bin': Buffer.from('x'), 'frames.bin': randomBytes(2 * 4096 + 100) }

let kms: LocalKms
let kmsClient: KMS
let kmsKeyArn: string
let env: Record<string, string>
let dir: string
let input: string
let aes: ReturnType<typeof rawAesKey>
let rsa: { publicPem: string; privatePem: string; publicPath: string; privatePath: string }

beforeAll(async () => {
  kms = await startLocalKms()
  kmsKeyArn = await kms.createKey('sdk-interop')
  env = localKmsEnv(kms)
  kmsClient = new KMS({ endpoint: kms.endpoint, region: kms.region, credentials: { accessKeyId: env.AWS_ACCESS_KEY_ID, secretAccessKey: env.AWS_SECRET_ACCESS_KEY } })
  dir = tempDir('envcrypt-interop-')
  input = join(dir, 'in')
  writeTree(input, FILES)
  aes = rawAesKey(dir, 'aes1')
  const pair = generateKeyPairSync('rsa', { modulusLength: 2048 })
  rsa = {
    publicPem: pair.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    privatePem: pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicPath: join(dir, 'rsa-public.pem'),
    privatePath: join(dir, 'rsa-private.pem'),
  }
  writeFileSync(rsa.publicPath, rsa.publicPem)
  writeFileSync(rsa.privatePath, rsa.privatePem, { mode: 0o600 })
})
afterAll(async () => {
  kmsClient?.destroy()
  await kms?.close()
})

// ---------- the SDK's keyrings, built here from the same key files, not through envcrypt ----------

type Padding = 'oaep-sha256' | 'oaep-sha1' | 'pkcs1'
const sdkAes = (): KeyringNode =>
  new RawAesKeyringNode({ keyName: 'aes1', keyNamespace: 'envcrypt', unencryptedMasterKey: new Uint8Array(readFileSync(aes.path)), wrappingSuite: RawAesWrappingSuiteIdentifier.AES256_GCM_IV12_TAG16_NO_PADDING })
const sdkRsa = (padding: Exclude<Padding, 'pkcs1'>, withPrivate: boolean): KeyringNode =>
  new RawRsaKeyringNode({
    keyName: 'rsa1',
    keyNamespace: 'envcrypt',
    rsaKey: { publicKey: rsa.publicPem, privateKey: withPrivate ? rsa.privatePem : undefined },
    padding: constants.RSA_PKCS1_OAEP_PADDING,
    oaepHash: padding === 'oaep-sha1' ? 'sha1' : 'sha256',
  })
const sdkKms = (role: 'generator' | 'decrypt'): KeyringNode =>
  new KmsKeyringNode({ clientProvider: () => kmsClient, ...(role === 'generator' ? { generatorKeyId: kmsKeyArn } : { keyIds: [kmsKeyArn] }) })

// ---------- the CLI's key specs for the same keys ----------

const cliAes = () => aes.spec
const cliRsa = (padding: Padding, path: string) => ['-w', 'provider=raw-rsa', 'key=rsa1', `padding=${padding}`, `material=file://${path}`]
const cliKms = () => ['-w', `key=${kmsKeyArn}`]

/** The CLI encrypts the input tree; each output is read back by the SDK with `keyring` and must equal its input. */
async function expectSdkReadsCliOutput(engine: string, name: string, spec: string[], readers: Record<string, () => KeyringNode>) {
  const out = join(dir, engine, `${name}-by-cli`)
  const result = await runCli(['-e', '-r', '-i', input, '-o', out, ...spec, '-S', '--engine', engine], { env })
  expect(result.stderr).not.toMatch(/error/)
  expect(result.code).toBe(0)
  expect(listFiles(out)).toEqual(Object.keys(FILES).map((f) => `${f}.encrypted`).sort())
  for (const [reader, keyring] of Object.entries(readers)) {
    for (const [file, plaintext] of Object.entries(FILES)) {
      const { plaintext: back } = await sdk.decrypt(keyring(), readFileSync(join(out, `${file}.encrypted`)))
      expect(Buffer.from(back).equals(plaintext), `${name} ${file} read by the SDK with ${reader}`).toBe(true)
    }
  }
  return out
}

/** The SDK encrypts every input file with `keyring`; the CLI decrypts the tree with each of `specs` alone. */
async function expectCliReadsSdkOutput(engine: string, name: string, keyring: () => KeyringNode, specs: Record<string, string[]>) {
  const written = join(dir, engine, `${name}-by-sdk`)
  mkdirSync(written, { recursive: true })
  for (const [file, plaintext] of Object.entries(FILES)) {
    const { result } = await sdk.encrypt(keyring(), plaintext, { encryptionContext: { writer: 'sdk' } })
    writeFileSync(join(written, file), result)
  }
  for (const [reader, spec] of Object.entries(specs)) {
    const out = join(dir, engine, `${name}-read-with-${reader}`)
    const result = await runCli(['-d', '-r', '-i', written, '-o', out, '--suffix', ...spec, '-S', '--engine', engine, '-c', 'writer=sdk'], { env })
    expect(result.stderr).not.toMatch(/error/)
    expect(result.code).toBe(0)
    for (const [file, plaintext] of Object.entries(FILES)) expect(readFileSync(join(out, file)).equals(plaintext), `${name} ${file} read by the CLI with ${reader}`).toBe(true)
  }
  return written
}

/** Decrypt `messagePaths` with the SDK in one child Node that re-enables RSA PKCS#1 v1.5 decryption (Node 20
 *  refuses it since CVE-2023-46809); returns the plaintexts in order. */
function sdkDecryptPkcs1(messagePaths: string[]): Buffer[] {
  const script = `
    const { buildClient, CommitmentPolicy, RawRsaKeyringNode } = require('@aws-crypto/client-node')
    const { constants } = require('node:crypto')
    const { readFileSync } = require('node:fs')
    const [privatePath, ...messagePaths] = process.argv.slice(1)
    const keyring = new RawRsaKeyringNode({ keyName: 'rsa1', keyNamespace: 'envcrypt', rsaKey: { privateKey: readFileSync(privatePath, 'utf8') }, padding: constants.RSA_PKCS1_PADDING })
    const client = buildClient(CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    Promise.all(messagePaths.map((path) => client.decrypt(keyring, readFileSync(path))))
      .then((results) => process.stdout.write('plaintexts:' + JSON.stringify(results.map(({ plaintext }) => Buffer.from(plaintext).toString('base64')))))`
  const out = execFileSync(process.execPath, ['--security-revert=CVE-2023-46809', '-e', script, rsa.privatePath, ...messagePaths], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
  // Node prints its revert warning on stdout first.
  const [, json] = out.toString().split('plaintexts:')
  expect(json, 'the child printed no plaintext').toBeDefined()
  return (JSON.parse(json) as string[]).map((base64) => Buffer.from(base64, 'base64'))
}

describe.each(ENGINES)('engine %s: the SDK reads what the CLI writes, and the CLI reads what the SDK writes', (engine) => {
  it(`engine ${engine}: raw RSA with oaep-sha256 and oaep-sha1, both ways`, async () => {
    for (const padding of ['oaep-sha256', 'oaep-sha1'] as const) {
      await expectSdkReadsCliOutput(engine, `rsa-${padding}`, cliRsa(padding, rsa.publicPath), { [padding]: () => sdkRsa(padding, true) })
      await expectCliReadsSdkOutput(engine, `rsa-${padding}`, () => sdkRsa(padding, false), { [padding]: cliRsa(padding, rsa.privatePath) })
    }
  })

  // The CLI's own pkcs1 decrypt (Node 20 refuses PKCS#1 v1.5 private decryption: one error with the way out, or
  // --allow-pkcs1-decrypt) is tested in test/fidelity.test.ts; here the SDK, with that protection reverted, reads
  // what the CLI wrote.
  it(`engine ${engine}: raw RSA with padding=pkcs1: the SDK under --security-revert=CVE-2023-46809 reads the CLI's output`, async () => {
    const out = join(dir, engine, 'rsa-pkcs1-by-cli')
    const result = await runCli(['-e', '-r', '-i', input, '-o', out, ...cliRsa('pkcs1', rsa.publicPath), '-S', '--engine', engine])
    expect(result.code).toBe(0)
    const plaintexts = sdkDecryptPkcs1(Object.keys(FILES).map((file) => join(out, `${file}.encrypted`)))
    expect(plaintexts).toEqual(Object.values(FILES))
  })

  it(`engine ${engine}: a multi-keyring (KMS generator, raw AES, raw RSA) opens with each key alone, both ways`, async () => {
    const oaep = 'oaep-sha256'
    await expectSdkReadsCliOutput(engine, 'multi', [...cliKms(), ...cliAes(), ...cliRsa(oaep, rsa.publicPath)], {
      kms: () => sdkKms('decrypt'),
      aes: sdkAes,
      rsa: () => sdkRsa(oaep, true),
    })
    const multi = () => new MultiKeyringNode({ generator: sdkKms('generator'), children: [sdkAes(), sdkRsa(oaep, false)] })
    await expectCliReadsSdkOutput(engine, 'multi', multi, { kms: cliKms(), aes: cliAes(), rsa: cliRsa(oaep, rsa.privatePath) })
  })

  it(`engine ${engine}: reencrypt moves SDK-written messages (raw AES) to a KMS key, and the SDK reads the result`, async () => {
    const written = join(dir, engine, 'for-reencrypt')
    mkdirSync(written, { recursive: true })
    for (const [file, plaintext] of Object.entries(FILES)) writeFileSync(join(written, file), (await sdk.encrypt(sdkAes(), plaintext, { encryptionContext: { team: 'data' } })).result)
    const rotated = join(dir, engine, 'rotated')
    const result = await runCli(['reencrypt', '-r', '-i', written, '-o', rotated, '-W', ...cliAes().slice(1), ...cliKms(), '-c', 'team=data', '-S', '--engine', engine], { env })
    expect(result.stderr).not.toMatch(/error/)
    expect(result.code).toBe(0)
    for (const [file, plaintext] of Object.entries(FILES)) {
      const { plaintext: back, messageHeader } = await sdk.decrypt(sdkKms('decrypt'), readFileSync(join(rotated, file)))
      expect(Buffer.from(back).equals(plaintext)).toBe(true)
      expect(messageHeader.encryptionContext.team).toBe('data')
      expect(messageHeader.encryptedDataKeys.map((k) => k.providerId)).toEqual(['aws-kms'])
    }
  })
})
