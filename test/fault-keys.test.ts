// Wrong or missing keys and KMS faults as a spec: each refusal is one line naming the file and the cause,
// nothing is written and no input changes; transient KMS faults (throttling, 5xx) are retried, bounded.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { KMS } from '@aws-sdk/client-kms'
import { localKmsEnv, startLocalKms, type LocalKms } from '../src/local-kms/server.js'
import { listFiles, rawAesKey, runCli, tempDir, writeTree } from './helpers/cli.js'
import { expectUntouched } from './helpers/faults.js'

let kms: LocalKms
let env: Record<string, string>

beforeAll(async () => {
  kms = await startLocalKms()
  env = localKmsEnv(kms)
})
afterAll(() => kms?.close())

function tree(count = 2) {
  const dir = tempDir('envcrypt-keys-')
  const files: Record<string, Buffer> = {}
  for (let i = 0; i < count; i++) files[`f${i}.bin`] = randomBytes(3000)
  writeTree(join(dir, 'in'), files)
  return { dir, input: join(dir, 'in'), files }
}

/** Decrypt `enc` expecting every file to fail: one `error:` line per file naming it and matching `cause`. */
/** `runWide`: an error that fails every file stops the run: one line, naming the first file, and the rest not attempted. */
async function expectRefused(args: string[], enc: string, out: string, cause: RegExp, options: { env?: Record<string, string | undefined>; runWide?: boolean } = {}) {
  const result = await expectUntouched([enc], () => runCli([...args, '-q', ...(options.runWide ? ['-j', '1'] : [])], options))
  expect(result.code).toBe(1)
  const lines = result.stderr.trim().split('\n')
  const names = options.runWide ? listFiles(enc).slice(0, 1) : listFiles(enc)
  expect(lines).toHaveLength(names.length)
  if (options.runWide) expect(lines[0]).toMatch(new RegExp(`the run stopped \\(1 failed, ${listFiles(enc).length - 1} not attempted\\)$`))
  for (const name of names) {
    const line = lines.find((l) => l.startsWith(`envcrypt: error: ${join(enc, name)}: `))
    expect(line, `${name} in ${result.stderr}`).toBeDefined()
    expect(line).toMatch(cause)
  }
  expect(existsSync(out) ? listFiles(out) : [], 'nothing may be written').toEqual([])
  return result
}

describe('wrong or missing keys', () => {
  it('a wrong raw AES key (same name): each file refused as "no wrapping key could decrypt the data key"', async () => {
    const { dir, input } = tree()
    const right = rawAesKey(dir, 'k1')
    await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...right.spec, '-S'])
    const wrong = rawAesKey(join(dir, 'in', '..'), 'k1-other')
    const spec = ['-w', 'provider=raw-aes', 'key=k1', `material=file://${wrong.path}`]
    await expectRefused(['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'dec'), ...spec, '-S'], join(dir, 'enc'), join(dir, 'dec'), /no wrapping key could decrypt the data key/)
  })

  it('an encryption context mismatch on decrypt: refused before any key is unwrapped, naming the pair', async () => {
    const { dir, input } = tree()
    const key = rawAesKey(dir)
    await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...key.spec, '-S', '-c', 'stage=prod'])
    await expectRefused(['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'dec'), ...key.spec, '-S', '-c', 'stage=dev'], join(dir, 'enc'), join(dir, 'dec'), /encryption context mismatch: "stage" is "prod", expected "dev"/)
  })

  describe('KMS', () => {
    let keyArn: string
    let encrypted: string
    beforeAll(async () => {
      keyArn = await kms.createKey('fault-keys')
      const { dir, input } = tree()
      encrypted = join(dir, 'enc')
      expect((await runCli(['-e', '-r', '-i', input, '-o', encrypted, '-w', `key=${keyArn}`, '-S'], { env })).code).toBe(0)
    })
    const out = () => join(tempDir('envcrypt-keys-out-'), 'dec')

    it('a disabled key (the one key named): DisabledException naming the key, once; the run stops', async () => {
      kms.setKeyEnabled(keyArn, false)
      try {
        const target = out()
        await expectRefused(['-d', '-r', '-i', encrypted, '-o', target, '-w', `key=${keyArn}`, '-S'], encrypted, target, /DisabledException.*is disabled/, { env, runWide: true })
      } finally {
        kms.setKeyEnabled(keyArn, true)
      }
    })

    it('a key scheduled for deletion: KMSInvalidStateException naming the key', async () => {
      const doomed = await kms.createKey('doomed')
      const { dir, input } = tree(1)
      await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), '-w', `key=${doomed}`, '-S'], { env })
      const client = new KMS({ endpoint: kms.endpoint, region: 'us-east-1', credentials: { accessKeyId: 'AKIDLOCALTEST', secretAccessKey: 'x' } })
      await client.scheduleKeyDeletion({ KeyId: doomed, PendingWindowInDays: 7 })
      client.destroy()
      await expectRefused(['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'dec'), '-w', `key=${doomed}`, '-S'], join(dir, 'enc'), join(dir, 'dec'), /KMSInvalidStateException.*pending deletion/i, { env })
    })

    it('no credentials at all: one credentials error; the run stops', async () => {
      const target = out()
      const none = join(tempDir(), 'none')
      await expectRefused(['-d', '-r', '-i', encrypted, '-o', target, '-w', `key=${keyArn}`, '-S'], encrypted, target, /[Cc]redential/, {
        env: { ...env, AWS_ACCESS_KEY_ID: undefined, AWS_SECRET_ACCESS_KEY: undefined, AWS_SHARED_CREDENTIALS_FILE: none, AWS_CONFIG_FILE: none, AWS_EC2_METADATA_DISABLED: 'true' },
        runWide: true,
      })
    })

    it('a discovery filter for another account: refused without any KMS call', async () => {
      const target = out()
      kms.resetCounts()
      await expectRefused(['-d', '-r', '-i', encrypted, '-o', target, '-w', 'discovery=true', 'discovery-account=999999999999', 'discovery-partition=aws', '-S'], encrypted, target, /no wrapping key could decrypt the data key/, { env })
      // Counted at the KMS endpoint, not by envcrypt: the filter excludes the key's account, so no request at all.
      expect(kms.counts()).toEqual({})
      // The same files with the key's own account do reach KMS: one Decrypt per file (the count above could fail).
      const allowed = await runCli(['-d', '-r', '-i', encrypted, '-o', out(), '-w', 'discovery=true', 'discovery-account=111122223333', 'discovery-partition=aws', '-S'], { env })
      expect(allowed.code).toBe(0)
      expect(kms.counts()).toEqual({ Decrypt: listFiles(encrypted).length })
    })

    it('the wrong KMS key named on decrypt: refused', async () => {
      const other = await kms.createKey('other')
      const target = out()
      await expectRefused(['-d', '-r', '-i', encrypted, '-o', target, '-w', `key=${other}`, '-S'], encrypted, target, /no wrapping key could decrypt the data key/, { env })
    })
  })
})

describe('KMS faults are retried with backoff, bounded', () => {
  for (const [fault, options] of [
    ['20% throttling', { throttleRate: 0.2, throttleSeed: 11 }],
    ['20% HTTP 500 KMSInternalException', { serverErrorRate: 0.2, throttleSeed: 12 }],
  ] as const) {
    it(`${fault}: 30 files encrypt and decrypt, every file correct`, async () => {
      const faulty = await startLocalKms(options)
      try {
        const key = await faulty.createKey('faulty')
        const { dir, input, files } = tree(30)
        const faultyEnv = { ...env, AWS_ENDPOINT_URL_KMS: faulty.endpoint }
        expect((await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), '-w', `key=${key}`, '-S', '-j', '8'], { env: faultyEnv })).code).toBe(0)
        const dec = await runCli(['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'dec'), '--suffix', '-w', `key=${key}`, '-S', '-j', '8', '--summary', '-'], { env: faultyEnv })
        expect(dec.code).toBe(0)
        const counts = faulty.counts()
        expect((counts.Throttled ?? 0) + (counts.ServerError ?? 0)).toBeGreaterThan(0)
        for (const [name, bytes] of Object.entries(files)) expect(readFileSync(join(dir, 'dec', `${name}.encrypted`)).equals(bytes)).toBe(true)
      } finally {
        await faulty.close()
      }
    })
  }

  it('a KMS that always answers 500: each file fails with KMSInternalException after a bounded number of attempts', async () => {
    const broken = await startLocalKms({ serverErrorRate: 1 })
    try {
      const key = await kms.createKey('any')
      const { dir, input } = tree(1)
      const result = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), '-w', `key=${key}`, '-S'], { env: { ...env, AWS_ENDPOINT_URL_KMS: broken.endpoint } })
      expect(result.code).toBe(1)
      expect(result.stderr).toMatch(/f0\.bin: KMSInternalException/)
      // Bounded by attempts, not by time: exactly maxAttempts (8) requests reached the endpoint, all refused.
      expect(broken.counts()).toEqual({ ServerError: 8 })
      expect(existsSync(join(dir, 'enc'))).toBe(false)
    } finally {
      await broken.close()
    }
  })
})
