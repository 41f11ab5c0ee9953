// KMS down or refusing: an error that will fail every file stops the run at once (one line, exit 1, the rest
// not attempted and counted as such), and a KMS that accepts connections but never answers is given up on
// after its timeout times its attempts, not waited for for ever. `kms_calls` counts only answered calls.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawn, type ChildProcess } from 'node:child_process'
import { createServer, type Server } from 'node:net'
import { existsSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { localKmsEnv, startLocalKms, type LocalKms } from '../src/local-kms/server.js'
import { CLI, runCli, tempDir, writeTree } from './helpers/cli.js'

const FILES = 20

function twentyFiles(): { dir: string; input: string } {
  const dir = tempDir('envcrypt-kmsdown-')
  const files: Record<string, string> = {}
  for (let i = 0; i < FILES; i++) files[`f${String(i).padStart(2, '0')}.txt`] = `file ${i}`
  writeTree(join(dir, 'in'), files)
  return { dir, input: join(dir, 'in') }
}

/** A TCP server that accepts connections and reads requests but never answers; counts the KMS requests. */
async function muteServer(): Promise<{ endpoint: string; requests: () => number; close: () => Promise<void> }> {
  let requests = 0
  const server: Server = createServer((socket) => {
    socket.on('data', (data) => (requests += (data.toString('latin1').match(/^x-amz-target:/gim) ?? []).length))
    socket.on('error', () => undefined)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  return {
    endpoint: `http://127.0.0.1:${port}`,
    requests: () => requests,
    close: () => new Promise((resolve) => (server.closeAllConnections?.(), server.close(() => resolve()))),
  }
}

/** The run stopped at the first file: one error line (plus the summary line), exit 1, no output. */
async function expectStoppedRun(args: string[], env: Record<string, string | undefined>, error: RegExp, dir: string) {
  const result = await runCli([...args, '-j', '1', '--summary', '-'], { env })
  const errorLines = result.stderr.split('\n').filter((line) => line.startsWith('envcrypt: error'))
  expect(errorLines, result.stderr).toHaveLength(1)
  expect(errorLines[0]).toMatch(error)
  expect(errorLines[0]).toMatch(/the run stopped \(1 failed, 19 not attempted\)/)
  expect(result.code).toBe(1)
  const summary = JSON.parse(result.stdout.toString())
  expect(summary).toMatchObject({ files_ok: 0, files_failed: 1, files_not_attempted: FILES - 1 })
  expect(summary.stopped).toMatch(error)
  expect(!existsSync(join(dir, 'out')) || readdirSync(join(dir, 'out')).length === 0).toBe(true)
  return summary
}

const KEY = 'arn:aws:kms:us-west-2:111122223333:key/00000000-0000-4000-8000-000000000000'
const placeholderCredentials = { AWS_REGION: 'us-west-2', AWS_ACCESS_KEY_ID: 'AKIDTEST', AWS_SECRET_ACCESS_KEY: 'placeholder', AWS_PROFILE: '' }

describe('a KMS that accepts connections but never answers', () => {
  it('ENVCRYPT_KMS_TIMEOUT=1: 20 files at -j 1 end with exit 1 after exactly 8 attempts at the server, one line "KMS did not answer within 1 s"', async () => {
    const mute = await muteServer()
    try {
      const { dir, input } = twentyFiles()
      const env = { ...placeholderCredentials, AWS_ENDPOINT_URL_KMS: mute.endpoint, ENVCRYPT_KMS_TIMEOUT: '1' }
      const summary = await expectStoppedRun(['-e', '-r', '-i', input, '-o', join(dir, 'out'), '-w', `key=${KEY}`, '-S'], env, /KMS did not answer within 1 s \(8 attempts\)/, dir)
      expect(mute.requests()).toBe(8)
      // Nothing was answered: nothing is counted.
      expect(summary.kms_calls).toEqual({})
    } finally {
      await mute.close()
    }
  }, 120_000)

  it('--kms-timeout must be a positive number', async () => {
    const result = await runCli(['-e', '-i', 'x', '-o', 'y', '-w', `key=${KEY}`, '-S', '--kms-timeout', '0'])
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/--kms-timeout must be a positive number of seconds/)
  })
})

describe('the local KMS stopped (SIGSTOP) or killed', () => {
  let child: ChildProcess
  let endpoint: string
  let keyArn: string
  beforeAll(async () => {
    child = spawn(process.execPath, [CLI, 'local-kms', '--create-key'], { stdio: ['ignore', 'pipe', 'ignore'] })
    const line = await new Promise<string>((resolve) => child.stdout!.once('data', (d) => resolve(String(d))))
    ;({ endpoint, keyArn } = JSON.parse(line.split('\n')[0]!))
  })
  afterAll(() => {
    child.kill('SIGCONT')
    child.kill('SIGKILL')
  })

  it('SIGSTOP: the run stops at the first file with "KMS did not answer" (--kms-timeout 1), 19 not attempted', async () => {
    const { dir, input } = twentyFiles()
    const env = { ...placeholderCredentials, AWS_ENDPOINT_URL_KMS: endpoint }
    expect((await runCli(['-e', '-i', join(input, 'f00.txt'), '-o', join(dir, 'alive.enc'), '-w', `key=${keyArn}`, '-S'], { env })).code).toBe(0)
    child.kill('SIGSTOP')
    try {
      await expectStoppedRun(['-e', '-r', '-i', input, '-o', join(dir, 'out'), '-w', `key=${keyArn}`, '-S', '--kms-timeout', '1'], env, /KMS did not answer within 1 s/, dir)
    } finally {
      child.kill('SIGCONT')
    }
  }, 120_000)

  it('killed: the run stops at the first file with "KMS could not be reached (ECONNREFUSED", 19 not attempted, no call counted', async () => {
    const { dir, input } = twentyFiles()
    child.kill('SIGKILL')
    await new Promise((resolve) => child.once('exit', resolve))
    const env = { ...placeholderCredentials, AWS_ENDPOINT_URL_KMS: endpoint }
    const summary = await expectStoppedRun(['-e', '-r', '-i', input, '-o', join(dir, 'out'), '-w', `key=${keyArn}`, '-S'], env, /KMS could not be reached \(ECONNREFUSED/, dir)
    expect(summary.kms_calls).toEqual({})
  }, 120_000)
})

describe('KMS refusals that fail every file', () => {
  let kms: LocalKms
  beforeAll(async () => {
    kms = await startLocalKms()
  })
  afterAll(() => kms?.close())

  it('no credentials: one line, no request reaches KMS', async () => {
    const { dir, input } = twentyFiles()
    kms.resetCounts()
    const env = {
      ...localKmsEnv(kms),
      AWS_ACCESS_KEY_ID: undefined,
      AWS_SECRET_ACCESS_KEY: undefined,
      AWS_SESSION_TOKEN: undefined,
      AWS_SHARED_CREDENTIALS_FILE: join(dir, 'none'),
      AWS_CONFIG_FILE: join(dir, 'none'),
      AWS_EC2_METADATA_DISABLED: 'true',
      AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: undefined,
      AWS_CONTAINER_CREDENTIALS_FULL_URI: undefined,
    }
    const summary = await expectStoppedRun(['-e', '-r', '-i', input, '-o', join(dir, 'out'), '-w', `key=${await kms.createKey('nocreds')}`, '-S'], env, /credentials/, dir)
    expect(summary.kms_calls).toEqual({})
    expect(kms.counts().GenerateDataKey ?? 0).toBe(0)
  })

  it('an unknown key: one line naming NotFoundException, one answered call counted', async () => {
    const { dir, input } = twentyFiles()
    const unknown = `arn:aws:kms:${kms.region}:111122223333:key/11111111-1111-4111-8111-111111111111`
    const summary = await expectStoppedRun(['-e', '-r', '-i', input, '-o', join(dir, 'out'), '-w', `key=${unknown}`, '-S'], localKmsEnv(kms), /KMS refused the key \(NotFoundException/, dir)
    expect(summary.kms_calls).toEqual({ GenerateDataKey: 1 })
  })
})
