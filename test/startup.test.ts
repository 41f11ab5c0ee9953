// What each command loads: a raw AES run never loads the AWS SDK's KMS or S3 client, and bench, migrate,
// report and the local KMS load only for their own command. Asserted on the modules the CLI process loaded
// (recorded by test/helpers/module-loads.mjs), never on durations: start-up time belongs in benchmarks.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { localKmsEnv, startLocalKms, type LocalKms } from '../src/local-kms/server.js'
import { rawAesKey, runCli, tempDir } from './helpers/cli.js'

const PRELOAD = fileURLToPath(import.meta.resolve('./helpers/module-loads.mjs'))
let kms: LocalKms

beforeAll(async () => {
  kms = await startLocalKms()
})
afterAll(async () => {
  await kms?.close()
})

/** Runs the CLI and returns its exit code and the paths of every module it loaded (main thread and workers). */
async function loadsOf(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stderr: string; loaded: string[] }> {
  const record = join(tempDir(), 'loads.txt')
  writeFileSync(record, '')
  const result = await runCli(args, { env: { ...env, NODE_OPTIONS: `--import ${PRELOAD}`, ENVCRYPT_TEST_MODULE_LOADS: record } })
  return { code: result.code, stderr: result.stderr, loaded: readFileSync(record, 'utf8').split('\n').filter(Boolean) }
}

const loadedPackage = (loaded: string[], name: string) => loaded.some((path) => path.includes(`/node_modules/${name}/`))
const loadedDist = (loaded: string[], file: string) => loaded.some((path) => path.endsWith(`/dist/${file}`))

const COMMAND_MODULES = ['bench/bench.js', 'bench/report.js', 'migrate.js', 'cli/migrate.js', 'local-kms/server.js']

describe('what a command loads', () => {
  it('a raw AES encrypt and decrypt of a local file load neither the KMS nor the S3 client, nor other commands\' code', async () => {
    const dir = tempDir()
    const key = rawAesKey(dir)
    writeFileSync(join(dir, 'plain.txt'), 'one small file')
    const encrypt = await loadsOf(['-e', '-i', join(dir, 'plain.txt'), '-o', join(dir, 'plain.enc'), ...key.spec, '-S'])
    expect(encrypt.code).toBe(0)
    const decrypt = await loadsOf(['-d', '-i', join(dir, 'plain.enc'), '-o', join(dir, 'back.txt'), ...key.spec, '-S'])
    expect(decrypt.code).toBe(0)
    expect(readFileSync(join(dir, 'back.txt'), 'utf8')).toBe('one small file')
    for (const { loaded } of [encrypt, decrypt]) {
      // The recording works: the run's own modules are in it.
      expect(loadedPackage(loaded, '@aws-crypto/raw-aes-keyring-node')).toBe(true)
      expect(loadedDist(loaded, 'tree.js')).toBe(true)
      expect(loadedPackage(loaded, '@aws-sdk/client-kms')).toBe(false)
      expect(loadedPackage(loaded, '@aws-sdk/client-s3')).toBe(false)
      expect(loadedPackage(loaded, '@aws-crypto/kms-keyring-node')).toBe(false)
      for (const file of COMMAND_MODULES) expect(loadedDist(loaded, file), file).toBe(false)
      // One small file does not start the worker threads.
      expect(loadedDist(loaded, 'message/pool-worker.js')).toBe(false)
    }
  })

  it('a KMS key loads the KMS client, still not the S3 client', async () => {
    const dir = tempDir()
    writeFileSync(join(dir, 'plain.txt'), 'kms')
    const keyArn = await kms.createKey('startup test')
    const run = await loadsOf(['-e', '-i', join(dir, 'plain.txt'), '-o', join(dir, 'plain.enc'), '-w', `key=${keyArn}`, '-S'], localKmsEnv(kms))
    expect(run.code).toBe(0)
    expect(loadedPackage(run.loaded, '@aws-sdk/client-kms')).toBe(true)
    expect(loadedPackage(run.loaded, '@aws-sdk/client-s3')).toBe(false)
  })

  it('--help loads no command\'s code and not the KMS client; bench and migrate load theirs only for themselves', async () => {
    const help = await loadsOf(['--help'])
    expect(help.code).toBe(0)
    expect(loadedPackage(help.loaded, 'yargs')).toBe(true)
    for (const file of [...COMMAND_MODULES, 'tree.js']) expect(loadedDist(help.loaded, file), file).toBe(false)
    expect(loadedPackage(help.loaded, '@aws-sdk/client-kms')).toBe(false)

    const bench = await loadsOf(['bench', '--help'])
    expect(bench.code).toBe(0)
    expect(loadedDist(bench.loaded, 'bench/bench.js')).toBe(true)
    expect(loadedDist(bench.loaded, 'migrate.js')).toBe(false)

    const migrate = await loadsOf(['migrate', '--help'])
    expect(migrate.code).toBe(0)
    expect(loadedDist(migrate.loaded, 'migrate.js')).toBe(true)
    expect(loadedDist(migrate.loaded, 'bench/bench.js')).toBe(false)
  })
})
