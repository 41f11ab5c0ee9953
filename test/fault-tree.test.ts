// Odd trees and odd arguments: special files, directories that cannot be listed, names with control
// characters in a dry run, a metadata or summary file that cannot be written, and an empty -c.
import { afterAll, describe, expect, it } from 'vitest'
import { spawnSync } from 'node:child_process'
import { chmodSync, readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { listFiles, rawAesKey, readJsonLines, runCli, tempDir, writeTree } from './helpers/cli.js'
import { canMountTmpfs, handToUnprivileged, mountTmpfs, PERMISSION_TESTS_UNAVAILABLE, runCliAs, UNPRIVILEGED, unmount } from './helpers/faults.js'

function setup(files: Record<string, string>) {
  const dir = tempDir('envcrypt-tree-')
  writeTree(join(dir, 'in'), files)
  return { dir, input: join(dir, 'in'), key: rawAesKey(dir) }
}

describe('special files in a -r tree', () => {
  it('a FIFO, a socket and a device node: one "skipping KIND PATH" warning each, counted as skipped, never opened, exit 0', async () => {
    const { dir, input, key } = setup({ 'a.txt': 'a' })
    expect(spawnSync('mkfifo', [join(input, 'pipe')]).status).toBe(0)
    const socketServer = createServer()
    await new Promise<void>((resolve) => socketServer.listen(join(input, 'sock'), resolve))
    const device = spawnSync('mknod', [join(input, 'null'), 'c', '1', '3']).status === 0
    try {
      const result = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'out'), ...key.spec, '-S', '--summary', '-'])
      const warnings = result.stderr.split('\n').filter((line) => line.startsWith('envcrypt: warning: skipping'))
      expect(warnings.sort()).toEqual([
        ...(device ? [`envcrypt: warning: skipping character device ${join(input, 'null')}`] : []),
        `envcrypt: warning: skipping FIFO ${join(input, 'pipe')}`,
        `envcrypt: warning: skipping socket ${join(input, 'sock')}`,
      ].sort())
      expect(result.code).toBe(0)
      expect(JSON.parse(result.stdout.toString())).toMatchObject({ files_ok: 1, files_failed: 0, files_skipped: device ? 3 : 2 })
      expect(listFiles(join(dir, 'out'))).toEqual(['a.txt.encrypted'])
    } finally {
      socketServer.close()
    }
  })
})

const asWho = PERMISSION_TESTS_UNAVAILABLE ? ` (skipped: ${PERMISSION_TESTS_UNAVAILABLE})` : UNPRIVILEGED ? ' (as uid 65534)' : ''

describe('directories that cannot be listed', () => {
  it.skipIf(PERMISSION_TESTS_UNAVAILABLE !== '')('an unreadable subdirectory is one failure naming it; the rest of the tree is processed and --summary written' + asWho, async () => {
    const { dir, input, key } = setup({ 'a.txt': 'a', 'closed/b.txt': 'b', 'open/c.txt': 'c' })
    handToUnprivileged(dir)
    chmodSync(join(input, 'closed'), 0o000)
    const summaryPath = join(dir, 'summary.json')
    const result = await runCliAs(['-e', '-r', '-i', input, '-o', join(dir, 'out'), ...key.spec, '-S', '--summary', summaryPath], { user: UNPRIVILEGED })
    chmodSync(join(input, 'closed'), 0o755)
    expect(result.stderr).toContain(`envcrypt: error: ${join(input, 'closed')}: cannot list this directory (permission denied); the files in it were not processed`)
    expect(result.code).toBe(1)
    expect(listFiles(join(dir, 'out'))).toEqual(['a.txt.encrypted', 'open/c.txt.encrypted'])
    expect(JSON.parse(readFileSync(summaryPath, 'utf8'))).toMatchObject({ files_ok: 2, files_failed: 1 })
  })

  it('a directory whose path is longer than PATH_MAX is one failure; the rest of the tree is processed', async () => {
    const { dir, input, key } = setup({ 'a.txt': 'a' })
    // Made step by step with relative paths: no single call sees the whole path.
    const segment = 'd'.repeat(200)
    const made = spawnSync('bash', ['-c', `cd "$0" && for i in $(seq 22); do mkdir ${segment} && cd ${segment} || exit 1; done && echo deep > deep.txt`, input])
    expect(made.status).toBe(0)
    const result = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'out'), ...key.spec, '-S', '--summary', '-'])
    expect(result.stderr).toMatch(/: cannot list this directory \(paths in it are longer than PATH_MAX \(4096\)\); the files in it were not processed/)
    expect(result.code).toBe(1)
    expect(readdirSync(join(dir, 'out'))).toContain('a.txt.encrypted')
    expect(JSON.parse(result.stdout.toString())).toMatchObject({ files_ok: 1, files_failed: 1 })
  })
})

describe('--dry-run output', () => {
  it('names with a newline or ESC are escaped on stdout, one line per file', async () => {
    const { dir, input, key } = setup({ 'plain.txt': 'p', 'two\nlines.txt': 'n', 'esc\u001b[31mred.txt': 'e' })
    const result = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'out'), ...key.spec, '-S', '--dry-run'])
    expect(result.code).toBe(0)
    const lines = result.stdout.toString().trimEnd().split('\n')
    expect(lines).toHaveLength(3)
    expect(result.stdout.toString()).not.toContain('\u001b')
    expect(lines).toContain(`encrypt ${join(input, 'two\\nlines.txt')} -> ${join(dir, 'out', 'two\\nlines.txt.encrypted')}`)
    expect(lines).toContain(`encrypt ${join(input, 'esc\\x1b[31mred.txt')} -> ${join(dir, 'out', 'esc\\x1b[31mred.txt.encrypted')}`)
  })
})

describe('a metadata or summary file that cannot be written (1 MiB tmpfs, full)', () => {
  const mountPoint = tempDir('envcrypt-tmpfs-')
  const mountable = canMountTmpfs(mountPoint)
  afterAll(() => unmount(mountPoint))
  for (const which of ['--metadata-output', '--summary'] as const) {
    const name = `${which} on a full disk: one line naming the file and that the outputs were written, exit 1, every output in place`
    it.skipIf(!mountable)(mountable ? name : `${name} (skipped: mounting a tmpfs needs root)`, async () => {
      mountTmpfs(mountPoint, '1m')
      try {
        spawnSync('dd', ['if=/dev/zero', `of=${join(mountPoint, 'filler')}`, 'bs=64k'], { stdio: 'ignore' })
        expect(() => writeFileSync(join(mountPoint, 'probe'), Buffer.alloc(4096)), 'the disk is full').toThrow(/ENOSPC/)
        const { dir, input, key } = setup({ 'a.txt': 'a', 'b.txt': 'b' })
        const target = join(mountPoint, 'target')
        const args = which === '--summary' ? ['-S', '--summary', target] : ['--metadata-output', target]
        const result = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'out'), ...key.spec, ...args])
        expect(result.stderr).toContain(`envcrypt: error: cannot write the ${which === '--summary' ? 'summary' : 'metadata'} to ${target} (no space left on device); 2 output(s) were written`)
        expect(result.code).toBe(1)
        expect(listFiles(join(dir, 'out'))).toEqual(['a.txt.encrypted', 'b.txt.encrypted'])
      } finally {
        unmount(mountPoint)
      }
    })
  }
})

describe('-c with an empty argument or an empty value', () => {
  it("-c '' is refused with the flag named (as -c =v), exit 2", async () => {
    const { dir, input, key } = setup({ 'a.txt': 'a' })
    for (const bad of ['', '=v']) {
      const result = await runCli(['-e', '-i', join(input, 'a.txt'), '-o', join(dir, 'a.enc'), ...key.spec, '-S', '-c', bad])
      expect(result.code).toBe(2)
      expect(result.stderr).toMatch(/-c\/--encryption-context: /)
    }
    expect(readdirSync(dir)).not.toContain('a.enc')
  })

  it('-c team= (an empty value) is allowed, as aws-encryption-cli: it is stored, and decrypt can require it', async () => {
    const { dir, input, key } = setup({ 'a.txt': 'a' })
    const meta = join(dir, 'meta.jsonl')
    expect((await runCli(['-e', '-i', join(input, 'a.txt'), '-o', join(dir, 'a.enc'), ...key.spec, '--metadata-output', meta, '-c', 'team='])).code).toBe(0)
    expect(readJsonLines(meta)[0].header.encryption_context).toMatchObject({ team: '' })
    expect((await runCli(['-d', '-i', join(dir, 'a.enc'), '-o', join(dir, 'a.dec'), ...key.spec, '-S', '-c', 'team='])).code).toBe(0)
    const mismatch = await runCli(['-d', '-i', join(dir, 'a.enc'), '-o', join(dir, 'b.dec'), ...key.spec, '-S', '-c', 'team=x'])
    expect(mismatch.code).toBe(1)
    expect(mismatch.stderr).toMatch(/encryption context mismatch/)
  }, 120_000)
})
