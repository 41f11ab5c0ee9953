// Resource limits as a spec, on every engine: a full disk, a low open-file limit and an absurd -j end in
// per-file errors (or none), a summary and an exit code, never a crash with an unhandled 'error' event.
import { afterAll, describe, expect, it } from 'vitest'
import { spawn } from 'node:child_process'
import { existsSync, readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { CLI, listFiles, rawAesKey, runCli, tempDir, writeTree, type CliResult } from './helpers/cli.js'
import { canMountTmpfs, mountTmpfs, unmount } from './helpers/faults.js'

const ENGINES = ['pool', 'js', 'sdk'] as const
const CRASH = /Unhandled|exceeded plaintextLength|node:internal|^\s+at /m

/** The CLI under `ulimit -n LIMIT` (a shell sets it, then becomes node). */
function runCliWithFileLimit(limit: number, args: string[]): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-c', `ulimit -n ${limit} && exec "$0" "$@"`, process.execPath, CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    const out: Buffer[] = []
    const err: Buffer[] = []
    child.stdout.on('data', (d) => out.push(d))
    child.stderr.on('data', (d) => err.push(d))
    child.on('error', reject)
    child.on('close', (code, signal) => resolve({ code, signal, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString() }))
  })
}

function manyFiles(count: number, size: number) {
  const dir = tempDir('envcrypt-limits-')
  const files: Record<string, Buffer> = {}
  for (let i = 0; i < count; i++) files[`f${String(i).padStart(4, '0')}.bin`] = randomBytes(size)
  writeTree(join(dir, 'in'), files)
  return { dir, input: join(dir, 'in'), key: rawAesKey(dir), names: Object.keys(files).sort() }
}

describe('a full disk (1 MiB tmpfs) and a 2 MB file', () => {
  const mountPoint = tempDir('envcrypt-tmpfs-')
  const mountable = canMountTmpfs(mountPoint)
  afterAll(() => unmount(mountPoint))
  for (const engine of ENGINES) {
    const name = `--engine ${engine}: encrypt and decrypt fail with "no space left on device", exit 1, a --summary, nothing left on the disk`
    it.skipIf(!mountable)(mountable ? name : `${name} (skipped: mounting a tmpfs needs root)`, async () => {
      mountTmpfs(mountPoint, '1m')
      try {
        const { dir, input, key } = manyFiles(1, 2_000_000)
        const file = join(input, 'f0000.bin')
        const encrypted = join(dir, 'f.enc')
        expect((await runCli(['-e', '-i', file, '-o', encrypted, ...key.spec, '-S'])).code).toBe(0)
        for (const [mode, source] of [['-e', file], ['-d', encrypted]] as const) {
          const summaryPath = join(dir, `summary${mode}.json`)
          const result = await runCli([mode, '-i', source, '-o', join(mountPoint, 'x'), ...key.spec, '-S', '--engine', engine, '--summary', summaryPath])
          expect(result.stderr).not.toMatch(CRASH)
          expect(result.stderr).toMatch(/: no space left on device/)
          expect(result.code).toBe(1)
          expect(JSON.parse(readFileSync(summaryPath, 'utf8'))).toMatchObject({ files_ok: 0, files_failed: 1 })
          expect(readdirSync(mountPoint)).toEqual([])
        }
      } finally {
        unmount(mountPoint)
      }
    }, 120_000)
  }
})

describe('ulimit -n 64', () => {
  for (const engine of ENGINES) {
    it(`--engine ${engine}: 300 files encrypt at -j 64 (lowered, with a note) and decrypt at the default -j, every file, exit 0`, async () => {
      const { dir, input, key, names } = manyFiles(300, 3000)
      const enc = await runCliWithFileLimit(64, ['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...key.spec, '-S', '--engine', engine, '-j', '64'])
      expect(enc.stderr).not.toMatch(/EMFILE|too many open files/)
      expect(enc.stderr).not.toMatch(CRASH)
      expect(enc.stderr).toMatch(/warning: -j 64 lowered to \d+: the open-file limit \(ulimit -n\) is 64/)
      expect(enc.code).toBe(0)
      const dec = await runCliWithFileLimit(64, ['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'dec'), ...key.spec, '-S', '--engine', engine, '--suffix', ''])
      expect(dec.stderr).not.toMatch(/EMFILE|too many open files/)
      expect(dec.code).toBe(0)
      expect(listFiles(join(dir, 'dec'))).toEqual(names.map((n) => `${n}.encrypted`))
      for (const name of names) expect(readFileSync(join(dir, 'dec', `${name}.encrypted`)).equals(readFileSync(join(input, name)))).toBe(true)
    }, 240_000)
  }
})

describe('-j 100000', () => {
  for (const engine of ['js', 'sdk'] as const) {
    it(`--engine ${engine}: 2,000 files, -j lowered to at most 1024 with a note, every file encrypted, exit 0`, async () => {
      const { dir, input, key } = manyFiles(2000, 100)
      const result = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...key.spec, '-S', '--engine', engine, '-j', '100000', '--summary', '-'])
      expect(result.stderr).not.toMatch(CRASH)
      expect(result.stderr).toMatch(/warning: -j 100000 lowered to (\d+): /)
      expect(Number(/lowered to (\d+)/.exec(result.stderr)![1])).toBeLessThanOrEqual(1024)
      expect(result.code).toBe(0)
      expect(JSON.parse(result.stdout.toString())).toMatchObject({ files_ok: 2000, files_failed: 0 })
      expect(existsSync(join(dir, 'enc'))).toBe(true)
    }, 240_000)
  }
})
