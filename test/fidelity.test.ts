// Drop-in fidelity: scripts written for the official aws-encryption-cli behave the same under envcrypt (each
// case was checked side by side against aws-encryption-cli 4.3.0), and newcomers' mistakes get helpful errors.
import { describe, expect, it } from 'vitest'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { listFiles, rawAesKey, runCli, tempDir, writeTree } from './helpers/cli.js'

function setup(files: Record<string, string> = { 'a.txt': 'alpha', 'sub/b.txt': 'beta', 's2/c.txt': 'gamma' }) {
  const dir = tempDir()
  const input = join(dir, 'data')
  writeTree(input, files)
  return { dir, input, key: rawAesKey(dir) }
}

describe('scripts written for the official CLI', () => {
  it('--no-overwrite with an existing output: a warning, the output untouched, counted as skipped, exit 0', async () => {
    const { dir, input, key } = setup()
    mkdirSync(join(dir, 'enc'))
    writeFileSync(join(dir, 'enc', 'a.txt.encrypted'), 'existing')
    const result = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...key.spec, '-S', '--no-overwrite', '--summary', '-'])
    expect(result.code, result.stderr).toBe(0)
    expect(result.stderr).toContain(`warning: ${join(dir, 'enc', 'a.txt.encrypted')} exists; skipped (--no-overwrite)`)
    expect(JSON.parse(result.stdout.toString())).toMatchObject({ files_ok: 2, files_skipped: 1, files_failed: 0 })
    expect(readFileSync(join(dir, 'enc', 'a.txt.encrypted'), 'utf8')).toBe('existing')
    expect(listFiles(join(dir, 'enc'))).toEqual(['a.txt.encrypted', 's2/c.txt.encrypted', 'sub/b.txt.encrypted'])
    const dry = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...key.spec, '-S', '--no-overwrite', '-n'])
    expect(dry.stdout.toString()).toContain(`skip ${join(input, 'a.txt')} -> ${join(dir, 'enc', 'a.txt.encrypted')}  (output exists, --no-overwrite)`)
  })
})
