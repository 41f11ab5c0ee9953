// Starts s3rver on 127.0.0.1 (a free port, a temporary directory) in a child process, and stops it.
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

export interface S3rverHandle {
  endpoint: string
  directory: string
  stop(): Promise<void>
}

/** The credentials s3rver accepts (it checks signatures). */
export const S3RVER_ENV = {
  AWS_ACCESS_KEY_ID: 'S3RVER',
  AWS_SECRET_ACCESS_KEY: 'S3RVER',
  AWS_REGION: 'us-east-1',
}

export async function startS3rver(buckets: string[]): Promise<S3rverHandle> {
  const directory = await mkdtemp(join(tmpdir(), 'envcrypt-s3rver-'))
  const script = fileURLToPath(new URL('./s3rver-child.mjs', import.meta.url))
  const child: ChildProcess = spawn(process.execPath, [script, directory, ...buckets], {
    env: { ...process.env, NODE_OPTIONS: '--openssl-legacy-provider' },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const port = await new Promise<number>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! })
    lines.once('line', (line) => resolve(JSON.parse(line).port))
    child.once('exit', (code) => reject(new Error(`s3rver exited with code ${code} before listening`)))
    child.once('error', reject)
  })
  return {
    endpoint: `http://127.0.0.1:${port}`,
    directory,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve))
        child.kill('SIGTERM')
        const killLater = setTimeout(() => child.kill('SIGKILL'), 5000)
        await exited
        clearTimeout(killLater)
      }
      await rm(directory, { recursive: true, force: true })
    },
  }
}
