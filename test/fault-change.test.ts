// Inputs that change while they are read: a file that shrinks, grows or is replaced (renamed over) once its
// output has started must fail with "changed while being read", on every engine, and leave no output.
import { describe, expect, it } from 'vitest'
import { appendFileSync, existsSync, mkdirSync, openSync, readdirSync, renameSync, statSync, truncateSync, writeFileSync, closeSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { rawAesKey, tempDir } from './helpers/cli.js'
import { spawnCli, temporariesUnder, waitFor } from './helpers/faults.js'

/** Large enough that the slowest engine is still reading when the test sees the output temporary grow. */
const BIG = 96 * 1024 * 1024

function bigFile(path: string): void {
  const fd = openSync(path, 'w')
  const block = randomBytes(1024 * 1024)
  for (let i = 0; i < BIG / block.length; i++) writeSync(fd, block)
  closeSync(fd)
}

/** Some output bytes exist in a temporary under `dir`: the input is being read. */
function outputStarted(dir: string): boolean {
  if (!existsSync(dir)) return false
  return temporariesUnder(dir).some((rel) => {
    try {
      return statSync(join(dir, rel)).size > 0
    } catch {
      return false
    }
  })
}

const changes: Record<string, (path: string, dir: string) => void> = {
  shrinks: (path) => truncateSync(path, 1_000_000),
  grows: (path) => appendFileSync(path, randomBytes(3 * 1024 * 1024)),
  'is replaced (renamed over)': (path, dir) => {
    writeFileSync(join(dir, 'other.bin'), 'another file')
    renameSync(join(dir, 'other.bin'), path)
  },
}

describe('an input that changes while it is encrypted', () => {
  for (const engine of ['pool', 'js', 'sdk']) {
    for (const [what, change] of Object.entries(changes)) {
      it(`--engine ${engine}: a file that ${what} mid-read fails with "changed while being read", exit 1, no output, no temporary`, async () => {
        const dir = tempDir('envcrypt-change-')
        const key = rawAesKey(dir)
        const input = join(dir, 'in')
        const out = join(dir, 'out')
        mkdirSync(input)
        bigFile(join(input, 'g.bin'))
        writeFileSync(join(input, 'small.txt'), 'left alone')
        const running = spawnCli(['-e', '-r', '-i', input, '-o', out, ...key.spec, '-S', '--engine', engine, '-j', '1'])
        expect(await waitFor(() => outputStarted(out), 60_000)).toBe(true)
        change(join(input, 'g.bin'), dir)
        const result = await running.result
        expect(result.stderr).toMatch(new RegExp(`g\\.bin: the input changed while being read`))
        expect(result.stderr).not.toMatch(/Unhandled|exceeded plaintextLength|at .*\.js:\d+/)
        expect(result.code).toBe(1)
        expect(readdirSync(out)).toEqual(['small.txt.encrypted'])
        expect(temporariesUnder(out)).toEqual([])
      }, 120_000)
    }
  }
})
