// File-system edge cases as a spec: symlinks, permissions, a full disk, odd names, and outputs that would
// land on or in the input. In every case no input is modified or deleted (each test fingerprints them).
import { afterAll, describe, expect, it } from 'vitest'
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { listFiles, rawAesKey, readJsonLines, runCli, tempDir, writeTree } from './helpers/cli.js'
import { canMountTmpfs, expectUntouched, handToUnprivileged, mountTmpfs, PERMISSION_TESTS_UNAVAILABLE, RUNNING_AS_ROOT, runCliAs, temporariesUnder, UNPRIVILEGED, unmount } from './helpers/faults.js'

function setup(files: Record<string, Buffer | string>) {
  const dir = tempDir('envcrypt-fs-')
  writeTree(join(dir, 'in'), files)
  return { dir, input: join(dir, 'in'), key: rawAesKey(dir) }
}

const asWho = PERMISSION_TESTS_UNAVAILABLE
  ? ` (skipped: ${PERMISSION_TESTS_UNAVAILABLE})`
  : RUNNING_AS_ROOT ? ' (running as root: the CLI runs as uid 65534 so that permissions apply)' : ''

describe('symlinks', () => {
  it('a symlink pointing outside the input root is skipped with a warning; --follow-symlinks includes it', async () => {
    const { dir, input, key } = setup({ 'inside.txt': 'inside' })
    writeFileSync(join(dir, 'outside-secret.txt'), 'outside the tree')
    symlinkSync(join(dir, 'outside-secret.txt'), join(input, 'escape.txt'))
    symlinkSync('inside.txt', join(input, 'alias.txt'))
    mkdirSync(join(dir, 'elsewhere'))
    writeFileSync(join(dir, 'elsewhere', 'deep.txt'), 'outside too')
    symlinkSync(join(dir, 'elsewhere'), join(input, 'dirlink'))
    await expectUntouched([input, join(dir, 'elsewhere')], async () => {
      const plain = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...key.spec, '-S'])
      expect(plain.code).toBe(0)
      expect(plain.stderr).toMatch(/skipping symlink .*escape\.txt: it points outside/)
      // In-tree links are inputs like any file; nothing outside the root is read.
      expect(listFiles(join(dir, 'enc'))).toEqual(['alias.txt.encrypted', 'inside.txt.encrypted'])
      const followed = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc2'), ...key.spec, '-S', '--follow-symlinks'])
      expect(followed.code).toBe(0)
      expect(listFiles(join(dir, 'enc2'))).toEqual(['alias.txt.encrypted', 'escape.txt.encrypted', 'inside.txt.encrypted'])
    })
  })
})

describe.skipIf(PERMISSION_TESTS_UNAVAILABLE !== '')('permissions' + asWho, () => {
  it('an unreadable input fails alone with "permission denied", the others are encrypted, nothing is written for it', async () => {
    const { dir, input, key } = setup({ 'ok.txt': 'readable', 'locked.txt': 'not readable' })
    handToUnprivileged(dir)
    chmodSync(join(input, 'locked.txt'), 0o000)
    const result = await expectUntouched([input], () => runCliAs(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...key.spec, '-S', '-q'], { user: UNPRIVILEGED }))
    expect(result.code).toBe(1)
    expect(result.stderr.trim()).toBe(`envcrypt: error: ${join(input, 'locked.txt')}: permission denied: ${join(input, 'locked.txt')}`)
    expect(listFiles(join(dir, 'enc'))).toEqual(['ok.txt.encrypted'])
    expect(temporariesUnder(join(dir, 'enc'))).toEqual([])
  })

  it('an output directory that is not writable: every file fails with "permission denied", nothing written', async () => {
    const { dir, input, key } = setup({ 'a.txt': 'a', 'b.txt': 'b' })
    handToUnprivileged(dir)
    const out = join(dir, 'readonly-out')
    mkdirSync(out, { mode: 0o555 })
    chmodSync(out, 0o555)
    const result = await expectUntouched([input], () => runCliAs(['-e', '-r', '-i', input, '-o', out, ...key.spec, '-S', '-q'], { user: UNPRIVILEGED }))
    expect(result.code).toBe(1)
    const lines = result.stderr.trim().split('\n')
    expect(lines).toHaveLength(2)
    for (const line of lines) expect(line).toMatch(/: permission denied: /)
    expect(readdirSync(out)).toEqual([])
  })
})

describe('a full disk', () => {
  const mountPoint = tempDir('envcrypt-tmpfs-')
  const mountable = canMountTmpfs(mountPoint)
  afterAll(() => unmount(mountPoint))
  const name = mountable
    ? 'on a 256 KiB tmpfs: files that do not fit fail with "no space left on device", no temporary remains, every output present decrypts'
    : 'on a full disk (skipped: mounting a small tmpfs needs root in a permissive container)'
  it.skipIf(!mountable)(name, async () => {
    mountTmpfs(mountPoint, '256k')
    const files: Record<string, Buffer> = {}
    for (let i = 0; i < 10; i++) files[`f${i}.bin`] = randomBytes(60_000)
    const { dir, input, key } = setup(files)
    const result = await expectUntouched([input], () => runCli(['-e', '-r', '-i', input, '-o', mountPoint, ...key.spec, '-S', '-q', '-j', '4']))
    expect(result.code).toBe(1)
    const lines = result.stderr.trim().split('\n')
    expect(lines.length).toBeGreaterThan(0)
    for (const line of lines) expect(line).toMatch(/^envcrypt: error: .*f\d\.bin: no space left on device$/)
    expect(temporariesUnder(mountPoint)).toEqual([])
    const written = listFiles(mountPoint)
    expect(written.length + lines.length).toBe(10)
    const dec = await runCli(['-d', '-r', '-i', mountPoint, '-o', join(dir, 'dec'), '--suffix', ...key.spec, '-S'])
    expect(dec.code).toBe(0)
    for (const name of written) expect(readFileSync(join(dir, 'dec', name)).equals(files[name.replace(/\.encrypted$/, '')])).toBe(true)
  })
})

describe('names', () => {
  it('names with newlines, tabs, quotes and unicode round-trip; errors about them stay on one line', async () => {
    const odd = ['line\nbreak.txt', 'tab\there.txt', 'quote"s\'.txt', 'ünïcödé ✓ 日本語.txt', 'emoji 🔐.txt', '-dash.txt']
    const { dir, input, key } = setup(Object.fromEntries(odd.map((n) => [n, `content of ${n}`])))
    await expectUntouched([input], async () => {
      const meta = join(dir, 'meta.jsonl')
      expect((await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...key.spec, '--metadata-output', meta])).code).toBe(0)
      expect(readJsonLines(meta).map((r) => r.input).sort()).toEqual(odd.map((n) => join(input, n)).sort())
      expect((await runCli(['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'dec'), '--suffix', ...key.spec, '-S'])).code).toBe(0)
      for (const n of odd) expect(readFileSync(join(dir, 'dec', `${n}.encrypted`), 'utf8')).toBe(`content of ${n}`)
      // A failing file whose name holds a newline cannot forge a second log line.
      writeFileSync(join(dir, 'enc', 'line\nbreak.txt.encrypted'), 'not a message')
      const failed = await runCli(['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'dec2'), ...key.spec, '-S', '-q'])
      expect(failed.code).toBe(1)
      expect(failed.stderr.trim().split('\n')).toEqual([`envcrypt: error: ${join(dir, 'enc')}/line\\nbreak.txt.encrypted: not an AWS Encryption SDK message (malformed header) (Not a supported message format version.)`])
    })
  })
})

describe('outputs that would overwrite or land inside an input are refused up front (exit 2, nothing written)', () => {
  const cases: Array<[string, (ctx: ReturnType<typeof setup>) => string[], RegExp]> = [
    ['the output file is the input file', ({ input }) => ['-i', join(input, 'a.txt'), '-o', join(input, 'a.txt')], /the output is the input itself/],
    ['the output file is the input file reached through a symlinked directory', ({ dir, input }) => (symlinkSync(input, join(dir, 'via')), ['-i', join(input, 'a.txt'), '-o', join(dir, 'via', 'a.txt')]), /the output is the input itself/],
    ['the output directory is the input directory with no suffix', ({ input }) => ['-r', '-i', input, '-o', input, '--suffix'], /inside the input directory/],
    ['the output directory is inside the input directory', ({ input }) => ['-r', '-i', input, '-o', join(input, 'sub', 'out')], /inside the input directory/],
    ['the output directory is a symlink to the input directory, no suffix', ({ dir, input }) => (symlinkSync(input, join(dir, 'link')), ['-r', '-i', input, '-o', join(dir, 'link'), '--suffix']), /inside the input directory/],
    ['the output directory is a symlink into the input tree', ({ dir, input }) => (symlinkSync(join(input, 'sub'), join(dir, 'link')), ['-r', '-i', input, '-o', join(dir, 'link', 'x')]), /inside the input directory/],
    ['a glob whose outputs would replace its inputs through a symlinked directory', ({ dir, input }) => (symlinkSync(input, join(dir, 'link')), ['-i', `${input}/*.txt`, '-o', join(dir, 'link'), '--suffix']), /would be overwritten by its own output/],
    ['two inputs mapping to one output', ({ dir, input }) => ['-i', join(input, 'a.txt'), join(input, 'sub', 'a.txt'), '-o', join(dir, 'out')], /would both be written to/],
  ]
  for (const [name, makeArgs, message] of cases) {
    it(name, async () => {
      const ctx = setup({ 'a.txt': 'alpha', 'sub/a.txt': 'beta', 'sub/b.txt': 'gamma' })
      const args = makeArgs(ctx)
      const result = await expectUntouched([ctx.input], () => runCli(['-e', ...args, ...ctx.key.spec, '-S']))
      expect(result.code).toBe(2)
      expect(result.stderr).toMatch(message)
      expect(result.stderr.trim().split('\n')).toHaveLength(1)
      expect(existsSync(join(ctx.dir, 'out'))).toBe(false)
      expect(temporariesUnder(ctx.input)).toEqual([])
    })
  }
})
