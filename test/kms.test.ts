// KMS end to end: the real CLI, the real AWS SDK KMS client and KmsKeyringNode, against the project's
// local KMS endpoint over HTTP on 127.0.0.1. No client is mocked; the endpoint is reached the standard
// way (AWS_ENDPOINT_URL_KMS), as any other KMS-compatible endpoint would be.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { localKmsEnv, startLocalKms, type LocalKms } from '../src/local-kms/server.js'
import { listFiles, readJsonLines, runCli, tempDir, writeTree } from './helpers/cli.js'

let kms: LocalKms
let keyArn: string
let env: Record<string, string>

beforeAll(async () => {
  kms = await startLocalKms()
  keyArn = await kms.createKey('kms.test')
  env = localKmsEnv(kms)
})
afterAll(() => kms?.close())

function makeFiles(count: number, size = 1000): string {
  const dir = tempDir()
  const files: Record<string, Buffer> = {}
  for (let i = 0; i < count; i++) files[`file-${String(i).padStart(3, '0')}.bin`] = randomBytes(size)
  writeTree(join(dir, 'in'), files)
  return dir
}

const distinctDataKeys = (meta: string) => new Set(readJsonLines(meta).map((r) => r.header.encrypted_data_keys[0].encrypted_data_key)).size

describe('the anchor caching experiment at reduced size (200 files, one KMS key)', () => {
  let dir: string
  beforeAll(() => {
    dir = makeFiles(200)
  })

  it('without caching: 200 distinct data keys and 200 GenerateDataKey calls', async () => {
    kms.resetCounts()
    const meta = join(dir, 'plain.jsonl')
    const result = await runCli(['-e', '-r', '-i', join(dir, 'in'), '-o', join(dir, 'enc-nocache'), '-w', `key=${keyArn}`, '--metadata-output', meta, '--summary', '-', '-j', '16'], { env })
    expect(result.stderr).not.toMatch(/NodeVersionSupportWarning|error/)
    expect(result.code).toBe(0)
    expect(distinctDataKeys(meta)).toBe(200)
    expect(JSON.parse(result.stdout.toString()).kms_calls).toEqual({ GenerateDataKey: 200 })
    expect(kms.counts().GenerateDataKey).toBe(200)
    // The provider info of each data key is the full key ARN, as with AWS KMS.
    const edk = readJsonLines(meta)[0].header.encrypted_data_keys[0]
    expect(Buffer.from(edk.key_provider.provider_id, 'base64').toString()).toBe('aws-kms')
    expect(Buffer.from(edk.key_provider.key_info, 'base64').toString()).toBe(keyArn)
  })

  for (const jobs of ['1', '16']) {
    it(`with --caching capacity=1 max_age=10 max_messages_encrypted=100 and -j ${jobs}: exactly 2 data keys and 2 calls; decrypt makes one Decrypt per data key`, async () => {
      kms.resetCounts()
      const meta = join(dir, `cached-${jobs}.jsonl`)
      const caching = ['--caching', 'capacity=1', 'max_age=10', 'max_messages_encrypted=100']
      const enc = await runCli(['-e', '-r', '-i', join(dir, 'in'), '-o', join(dir, `enc-${jobs}`), '-w', `key=${keyArn}`, ...caching, '--metadata-output', meta, '--summary', '-', '-j', jobs, '-v'], { env })
      expect(enc.code).toBe(0)
      expect(distinctDataKeys(meta)).toBe(2)
      expect(JSON.parse(enc.stdout.toString()).kms_calls).toEqual({ GenerateDataKey: 2 })
      expect(kms.counts().GenerateDataKey).toBe(2)
      // The stderr summary reports the calls too, so no CloudTrail is needed.
      expect(enc.stderr).toMatch(/KMS calls: GenerateDataKey=2/)

      kms.resetCounts()
      const dec = await runCli(['-d', '-r', '-i', join(dir, `enc-${jobs}`), '-o', join(dir, `dec-${jobs}`), '--suffix', '-w', `key=${keyArn}`, ...caching, '-S', '--summary', '-', '-j', jobs], { env })
      expect(dec.code).toBe(0)
      expect(JSON.parse(dec.stdout.toString()).kms_calls).toEqual({ Decrypt: 2 })
      expect(kms.counts().Decrypt).toBe(2)
      for (const name of listFiles(join(dir, 'in'))) {
        expect(readFileSync(join(dir, `dec-${jobs}`, `${name}.encrypted`)).equals(readFileSync(join(dir, 'in', name)))).toBe(true)
      }
    })
  }

  it('decrypt without caching makes one Decrypt per file', async () => {
    kms.resetCounts()
    const result = await runCli(['-d', '-r', '-i', join(dir, 'enc-nocache'), '-o', join(dir, 'dec-nocache'), '-w', `key=${keyArn}`, '-S', '--summary', '-', '-j', '16'], { env })
    expect(result.code).toBe(0)
    expect(JSON.parse(result.stdout.toString()).kms_calls).toEqual({ Decrypt: 200 })
  })
})

describe('KMS keys', () => {
  it('multi-key encrypt (two KMS keys) decrypts with either key alone', async () => {
    const second = await kms.createKey('second')
    const dir = makeFiles(3)
    const meta = join(dir, 'm.jsonl')
    expect((await runCli(['-e', '-r', '-i', join(dir, 'in'), '-o', join(dir, 'enc'), '-w', `key=${keyArn}`, `key=${second}`, '--metadata-output', meta], { env })).code).toBe(0)
    const keyInfos = readJsonLines(meta)[0].header.encrypted_data_keys.map((k: any) => Buffer.from(k.key_provider.key_info, 'base64').toString()).sort()
    expect(keyInfos).toEqual([keyArn, second].sort())
    for (const key of [keyArn, second]) {
      const out = join(dir, `dec-${key.slice(-4)}`)
      const result = await runCli(['-d', '-r', '-i', join(dir, 'enc'), '-o', out, '-w', `key=${key}`, '-S', '--summary', '-'], { env })
      expect(result.code).toBe(0)
      expect(JSON.parse(result.stdout.toString()).kms_calls).toEqual({ Decrypt: 3 })
    }
  })

  it('discovery decrypts without naming the key; a discovery filter for another account refuses it', async () => {
    const dir = makeFiles(2)
    await runCli(['-e', '-r', '-i', join(dir, 'in'), '-o', join(dir, 'enc'), '-w', `key=${keyArn}`, '-S'], { env })
    const open = await runCli(['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'open'), '-w', 'discovery=true', '-S'], { env })
    expect(open.code).toBe(0)
    const filtered = await runCli(['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'ours'), '-w', 'discovery=true', 'discovery-account=111122223333', 'discovery-partition=aws', '-S'], { env })
    expect(filtered.code).toBe(0)
    const other = await runCli(['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'theirs'), '-w', 'discovery=true', 'discovery-account=999999999999', 'discovery-partition=aws', '-S', '--summary', '-'], { env })
    expect(other.code).toBe(1)
    expect(other.stderr).toMatch(/file-000\.bin\.encrypted: .*data key/)
    // Refused before any KMS call: the filter excludes the key.
    expect(JSON.parse(other.stdout.toString()).kms_calls).toEqual({})
    expect(existsSync(join(dir, 'theirs'))).toBe(false)
  })

  it('a disabled key gives a clear error naming the key and the file; exit 1; nothing at the output path', async () => {
    const key = await kms.createKey('to be disabled')
    const dir = makeFiles(1)
    await runCli(['-e', '-r', '-i', join(dir, 'in'), '-o', join(dir, 'enc'), '-w', `key=${key}`, '-S'], { env })
    kms.setKeyEnabled(key, false)
    const result = await runCli(['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'dec'), '-w', `key=${key}`, '-S'], { env })
    expect(result.code).toBe(1)
    const errorLine = result.stderr.split('\n').find((l) => l.includes('error:'))!
    expect(errorLine).toContain('file-000.bin.encrypted')
    expect(errorLine).toContain('DisabledException')
    expect(errorLine).toContain(key)
    expect(existsSync(join(dir, 'dec'))).toBe(false)
    const encryptWithDisabled = await runCli(['-e', '-r', '-i', join(dir, 'in'), '-o', join(dir, 'enc2'), '-w', `key=${key}`, '-S'], { env })
    expect(encryptWithDisabled.code).toBe(1)
    expect(encryptWithDisabled.stderr).toMatch(/DisabledException/)
    kms.setKeyEnabled(key, true)
  })

  it('throttling responses are retried and the run completes with every file correct', async () => {
    const throttled = await startLocalKms({ throttleRate: 0.2, throttleSeed: 7 })
    try {
      const key = await throttled.createKey('throttled')
      const dir = makeFiles(30)
      const throttledEnv = { ...env, AWS_ENDPOINT_URL_KMS: throttled.endpoint }
      expect((await runCli(['-e', '-r', '-i', join(dir, 'in'), '-o', join(dir, 'enc'), '-w', `key=${key}`, '-S', '-j', '8'], { env: throttledEnv })).code).toBe(0)
      expect((await runCli(['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'dec'), '--suffix', '-w', `key=${key}`, '-S', '-j', '8'], { env: throttledEnv })).code).toBe(0)
      expect(throttled.counts().Throttled).toBeGreaterThan(0)
      for (const name of listFiles(join(dir, 'in'))) {
        expect(readFileSync(join(dir, 'dec', `${name}.encrypted`)).equals(readFileSync(join(dir, 'in', name)))).toBe(true)
      }
    } finally {
      await throttled.close()
    }
  })

  it('no credentials: a one-line error, non-zero exit, nothing written', async () => {
    const dir = makeFiles(1)
    const result = await runCli(['-e', '-r', '-i', join(dir, 'in'), '-o', join(dir, 'enc'), '-w', `key=${keyArn}`, '-S'], {
      env: { ...env, AWS_ACCESS_KEY_ID: undefined, AWS_SECRET_ACCESS_KEY: undefined, AWS_SHARED_CREDENTIALS_FILE: join(dir, 'none'), AWS_CONFIG_FILE: join(dir, 'none'), AWS_EC2_METADATA_DISABLED: 'true' } as any,
    })
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(/file-000\.bin: .*[Cc]redential/)
    expect(existsSync(join(dir, 'enc'))).toBe(false)
  })
})
