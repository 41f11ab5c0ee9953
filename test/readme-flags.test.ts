// Flags and key specs the README documents, each run through the real CLI and checked by its effect: -R,
// --metadata-output -, keygen --bytes 16|24, KMS key=alias/NAME with region= and profile=, caching on stdin,
// reencrypt --commitment-policy (v1 to v2) and --caching, and `envcrypt local-kms` as a process with --state
// and --latency-ms. Counts are taken at the local KMS endpoint.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawn } from 'node:child_process'
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { randomBytes } from 'node:crypto'
import { buildClient, CommitmentPolicy, RawAesKeyringNode, RawAesWrappingSuiteIdentifier } from '@aws-crypto/client-node'
import { CreateAliasCommand, KMSClient } from '@aws-sdk/client-kms'
import { localKmsEnv, startLocalKms, type LocalKms } from '../src/local-kms/server.js'
import { CLI, listFiles, rawAesKey, readJsonLines, runCli, tempDir, VECTORS, writeTree } from './helpers/cli.js'

let kms: LocalKms
let keyArn: string
let env: Record<string, string>

beforeAll(async () => {
  kms = await startLocalKms()
  keyArn = await kms.createKey('readme-flags')
  env = localKmsEnv(kms)
})
afterAll(() => kms?.close())

function tree(files: Record<string, Buffer | string>) {
  const dir = tempDir('envcrypt-flags-')
  writeTree(join(dir, 'in'), files)
  return { dir, input: join(dir, 'in') }
}

describe('local flags', () => {
  it('-R is -r; --metadata-output - writes the metadata lines to stdout', async () => {
    const { dir, input } = tree({ 'a.txt': 'a', 'sub/b.txt': 'b' })
    const key = rawAesKey(dir)
    const result = await runCli(['-e', '-R', '-i', input, '-o', join(dir, 'enc'), ...key.spec, '--metadata-output', '-'])
    expect(result.code, result.stderr).toBe(0)
    expect(listFiles(join(dir, 'enc'))).toEqual(['a.txt.encrypted', 'sub/b.txt.encrypted'])
    const records = result.stdout.toString().trim().split('\n').map((line) => JSON.parse(line))
    expect(records.map((r) => r.input).sort()).toEqual([join(input, 'a.txt'), join(input, 'sub/b.txt')])
    for (const record of records) expect(record).toMatchObject({ mode: 'encrypt', header: { version: '2.0' } })
  })

  it('keygen --bytes 16 and 24 write keys of that size (mode 0600) that encrypt as AES-128/192 wrapping keys the SDK reads', async () => {
    for (const bytes of [16, 24] as const) {
      const { dir, input } = tree({ 'a.txt': `key of ${bytes} bytes` })
      const path = join(dir, 'k.key')
      expect((await runCli(['keygen', '--out', path, '--bytes', String(bytes)])).code).toBe(0)
      expect(readFileSync(path)).toHaveLength(bytes)
      expect(statSync(path).mode & 0o777).toBe(0o600)
      const result = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), '-w', 'provider=raw-aes', 'key=k', `material=file://${path}`, '-S'])
      expect(result.code, result.stderr).toBe(0)
      const wrappingSuite = bytes === 16 ? RawAesWrappingSuiteIdentifier.AES128_GCM_IV12_TAG16_NO_PADDING : RawAesWrappingSuiteIdentifier.AES192_GCM_IV12_TAG16_NO_PADDING
      const keyring = new RawAesKeyringNode({ keyName: 'k', keyNamespace: 'envcrypt', unencryptedMasterKey: new Uint8Array(readFileSync(path)), wrappingSuite })
      const { plaintext } = await buildClient(CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT).decrypt(keyring, readFileSync(join(dir, 'enc', 'a.txt.encrypted')))
      expect(Buffer.from(plaintext).toString()).toBe(`key of ${bytes} bytes`)
    }
  })
})

describe('KMS key specs', () => {
  it('key=alias/NAME needs a region: refused without one, accepted with region=, and the message names the key ARN', async () => {
    const client = new KMSClient({ endpoint: kms.endpoint, region: kms.region, credentials: { accessKeyId: env.AWS_ACCESS_KEY_ID, secretAccessKey: env.AWS_SECRET_ACCESS_KEY } })
    await client.send(new CreateAliasCommand({ AliasName: 'alias/readme-flags', TargetKeyId: keyArn }))
    client.destroy()
    const { dir, input } = tree({ 'a.txt': 'via alias' })
    const noRegion = { ...env, AWS_REGION: undefined, AWS_DEFAULT_REGION: undefined, AWS_CONFIG_FILE: join(dir, 'none') }
    const refused = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'refused'), '-w', 'key=alias/readme-flags', '-S'], { env: noRegion })
    expect(refused.code).not.toBe(0)
    expect(refused.stderr).toMatch(/[Rr]egion/)
    const meta = join(dir, 'meta.jsonl')
    const result = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), '-w', 'key=alias/readme-flags', `region=${kms.region}`, '--metadata-output', meta], { env: noRegion })
    expect(result.code, result.stderr).toBe(0)
    const edk = readJsonLines(meta)[0].header.encrypted_data_keys[0]
    expect(Buffer.from(edk.key_provider.key_info, 'base64').toString()).toBe(keyArn)
    const dec = await runCli(['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'dec'), '--suffix', '-w', `key=${keyArn}`, '-S'], { env })
    expect(dec.code, dec.stderr).toBe(0)
    expect(readFileSync(join(dir, 'dec', 'a.txt.encrypted'), 'utf8')).toBe('via alias')
  })

  it('profile=P takes credentials and region from that profile of the shared files; without it there are none', async () => {
    const { dir, input } = tree({ 'a.txt': 'via profile' })
    writeFileSync(join(dir, 'config'), `[profile envcrypt-test]\nregion = ${kms.region}\n`)
    writeFileSync(join(dir, 'credentials'), `[envcrypt-test]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = profile-secret\n`, { mode: 0o600 })
    const shared = {
      ...env,
      AWS_ACCESS_KEY_ID: undefined,
      AWS_SECRET_ACCESS_KEY: undefined,
      AWS_REGION: undefined,
      AWS_PROFILE: undefined,
      AWS_CONFIG_FILE: join(dir, 'config'),
      AWS_SHARED_CREDENTIALS_FILE: join(dir, 'credentials'),
      AWS_EC2_METADATA_DISABLED: 'true',
    }
    const without = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'without'), '-w', `key=${keyArn}`, '-S'], { env: shared })
    expect(without.code).toBe(1)
    expect(without.stderr).toMatch(/[Cc]redential/)
    expect(existsSync(join(dir, 'without'))).toBe(false)
    kms.resetCounts()
    const withProfile = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), '-w', `key=${keyArn}`, 'profile=envcrypt-test', '-S'], { env: shared })
    expect(withProfile.code, withProfile.stderr).toBe(0)
    expect(kms.counts()).toEqual({ GenerateDataKey: 1 })
  })

  it('--caching on stdin: the size is unknown, so caching is skipped; a 1 MiB stream encrypts (one data key) and decrypts', async () => {
    const plaintext = randomBytes(1024 * 1024)
    kms.resetCounts()
    const enc = await runCli(['-e', '-i', '-', '-o', '-', '-w', `key=${keyArn}`, '-S', '--caching', 'capacity=1', 'max_age=10'], { env, input: plaintext })
    expect(enc.code, enc.stderr).toBe(0)
    expect(kms.counts()).toEqual({ GenerateDataKey: 1 })
    const dec = await runCli(['-d', '-i', '-', '-o', '-', '-w', `key=${keyArn}`, '-S', '--caching', 'capacity=1', 'max_age=10'], { env, input: enc.stdout })
    expect(dec.code, dec.stderr).toBe(0)
    expect(dec.stdout.equals(plaintext)).toBe(true)
  })
})

describe('reencrypt flags', () => {
  it('--commitment-policy require-encrypt-allow-decrypt moves v1 messages to v2 committing ones (refused without it)', async () => {
    const dir = tempDir('envcrypt-flags-')
    const spec = ['provider=raw-aes', 'key=key1', 'namespace=envcrypt-test', `material=file://${join(VECTORS, 'key.bin')}`]
    const v1 = join(VECTORS, 'ciphertext-v1-noncommitting')
    const refused = await runCli(['reencrypt', '-r', '-i', v1, '-o', join(dir, 'refused'), '-W', ...spec, '-w', ...spec, '-S'])
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(/commitment/i)
    const meta = join(dir, 'meta.jsonl')
    const moved = await runCli(['reencrypt', '-r', '-i', v1, '-o', join(dir, 'v2'), '-W', ...spec, '-w', ...spec, '--commitment-policy', 'require-encrypt-allow-decrypt', '--metadata-output', meta])
    expect(moved.code, moved.stderr).toBe(0)
    for (const record of readJsonLines(meta)) expect(record.header).toMatchObject({ version: '2.0', algorithm: 'AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384' })
    // The strict policy, which refuses v1, reads every output (the SDK itself, with the same key).
    const keyring = new RawAesKeyringNode({ keyName: 'key1', keyNamespace: 'envcrypt-test', unencryptedMasterKey: new Uint8Array(readFileSync(join(VECTORS, 'key.bin'))), wrappingSuite: RawAesWrappingSuiteIdentifier.AES256_GCM_IV12_TAG16_NO_PADDING })
    const names = listFiles(join(dir, 'v2'))
    expect(names).toEqual(listFiles(v1))
    for (const name of names) {
      const { plaintext } = await buildClient(CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT).decrypt(keyring, readFileSync(join(dir, 'v2', name)))
      expect(Buffer.from(plaintext).equals(readFileSync(join(VECTORS, 'plaintext', name)))).toBe(true)
    }
  })

  it('--caching: reencrypting 4 messages that share one KMS data key makes one Decrypt at the endpoint instead of 4', async () => {
    const { dir, input } = tree(Object.fromEntries(Array.from({ length: 4 }, (_, i) => [`f${i}.bin`, randomBytes(500)])))
    // The new messages' plaintext size is not known ahead (it comes out of the old message), so, as for stdin,
    // only the unwrapping side caches: 4 GenerateDataKey either way (measured), 1 Decrypt instead of 4.
    const caching = ['--caching', 'capacity=1', 'max_age=60']
    kms.resetCounts()
    expect((await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), '-w', `key=${keyArn}`, '-S', '--suffix', ...caching], { env })).code).toBe(0)
    expect(kms.counts()).toEqual({ GenerateDataKey: 1 })
    const key = rawAesKey(dir)
    const counts: Record<string, unknown> = {}
    for (const [name, flags] of [['plain', []], ['cached', caching]] as const) {
      kms.resetCounts()
      const result = await runCli(['reencrypt', '-r', '-i', join(dir, 'enc'), '-o', join(dir, name), '-W', `key=${keyArn}`, ...key.spec, '-S', ...flags], { env })
      expect(result.code, result.stderr).toBe(0)
      counts[name] = kms.counts()
    }
    expect(counts).toEqual({ plain: { Decrypt: 4 }, cached: { Decrypt: 1 } })
  })
})

describe('envcrypt local-kms as a process', () => {
  /** Starts `envcrypt local-kms ARGS`; resolves with its first stdout line (JSON) and a stop function. */
  async function startProcess(args: string[]) {
    const child = spawn(process.execPath, [CLI, 'local-kms', ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let log = ''
    child.stderr!.on('data', (d) => (log += d))
    const first = await new Promise<string>((resolve, reject) => {
      createInterface({ input: child.stdout! }).once('line', resolve)
      child.once('exit', (code) => reject(new Error(`local-kms exited with ${code}: ${log}`)))
    })
    const stop = () => new Promise<number | null>((resolve) => (child.once('exit', resolve), child.kill('SIGTERM')))
    return { info: JSON.parse(first) as { endpoint: string; keyArn?: string }, stop, log: () => log }
  }

  it('--state keeps keys across restarts; --latency-ms delays every answer; the CLI uses it through AWS_ENDPOINT_URL_KMS', async () => {
    const { dir, input } = tree({ 'a.txt': 'through a separate local-kms process' })
    const state = join(dir, 'kms-state.json')
    const first = await startProcess(['--state', state, '--create-key', '--latency-ms', '50'])
    const processEnv = { ...env, AWS_ENDPOINT_URL_KMS: first.info.endpoint }
    const enc = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), '-w', `key=${first.info.keyArn}`, '-S'], { env: processEnv })
    expect(enc.code, enc.stderr).toBe(0)
    expect(await first.stop()).toBe(0)
    expect(statSync(state).mode & 0o777).toBe(0o600)
    // Each request's log line gives its time in the server, which a 50 ms delay bounds from below.
    const times = [...first.log().matchAll(/local-kms: GenerateDataKey 200 ok (\d+)ms/g)].map((m) => Number(m[1]))
    expect(times).toHaveLength(1)
    expect(times[0]).toBeGreaterThanOrEqual(50)
    // A new process on the same state file still has the key: the message decrypts.
    const second = await startProcess(['--state', state])
    try {
      const dec = await runCli(['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'dec'), '--suffix', '-w', `key=${first.info.keyArn}`, '-S'], { env: { ...env, AWS_ENDPOINT_URL_KMS: second.info.endpoint } })
      expect(dec.code, dec.stderr).toBe(0)
      expect(readFileSync(join(dir, 'dec', 'a.txt.encrypted'), 'utf8')).toBe('through a separate local-kms process')
    } finally {
      await second.stop()
    }
  })
})
