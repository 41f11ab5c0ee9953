// What a person sees: dry runs, inspect, key rotation, help, completion, errors and the terminal summary.
import { describe, expect, it } from 'vitest'
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, readdirSync, watch, writeFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import { randomBytes } from 'node:crypto'
import { CLI, listFiles, rawAesKey, readJsonLines, runCli, tempDir, VECTORS, writeTree } from './helpers/cli.js'
import { renderEndSummary } from '../src/cli/progress.js'

function setup() {
  const dir = tempDir()
  const input = join(dir, 'in')
  writeTree(input, { 'a.txt': 'alpha\n', 'sub/b.bin': randomBytes(10_000), 'sub/c.txt': 'PLAINTEXT-MARKER '.repeat(500) })
  return { dir, input, key: rawAesKey(dir) }
}

describe('--dry-run', () => {
  it('prints "encrypt IN -> OUT" per file and neither reads the key nor writes anything', async () => {
    const { dir, input } = setup()
    const missingKey = ['-w', 'provider=raw-aes', 'key=k1', `material=file://${join(dir, 'no-such.key')}`]
    const result = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...missingKey, '--metadata-output', join(dir, 'meta.jsonl'), '--dry-run'])
    expect(result.code).toBe(0)
    expect(result.stdout.toString().trim().split('\n').sort()).toEqual([
      `encrypt ${join(input, 'a.txt')} -> ${join(dir, 'enc', 'a.txt.encrypted')}`,
      `encrypt ${join(input, 'sub/b.bin')} -> ${join(dir, 'enc', 'sub/b.bin.encrypted')}`,
      `encrypt ${join(input, 'sub/c.txt')} -> ${join(dir, 'enc', 'sub/c.txt.encrypted')}`,
    ])
    expect(result.stderr).toMatch(/dry run: 3 file\(s\) to encrypt, 0 skipped/)
    expect(existsSync(join(dir, 'enc'))).toBe(false)
    expect(existsSync(join(dir, 'meta.jsonl'))).toBe(false)
  })

  it('marks the files --skip-existing would leave alone', async () => {
    const { dir, input, key } = setup()
    await runCli(['-e', '-i', join(input, 'a.txt'), '-o', join(dir, 'enc', 'a.txt.encrypted'), ...key.spec, '-S'])
    const result = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...key.spec, '-S', '--skip-existing', '-n'])
    const lines = result.stdout.toString().trim().split('\n')
    expect(lines).toContain(`skip ${join(input, 'a.txt')} -> ${join(dir, 'enc', 'a.txt.encrypted')}  (output exists)`)
    expect(lines.filter((l) => l.startsWith('encrypt '))).toHaveLength(2)
    expect(listFiles(join(dir, 'enc'))).toEqual(['a.txt.encrypted'])
  })
})

describe('inspect', () => {
  const folders = ['ciphertext-default', 'ciphertext-unsigned', 'ciphertext-v1-noncommitting']

  it('--json prints exactly the metadata stream header of the official CLI for each vector, without keys', async () => {
    for (const folder of folders) {
      const expected = new Map(readJsonLines(join(VECTORS, 'metadata', `${folder}.encrypt.json`)).map((r) => [r.output, r.header]))
      const files = listFiles(join(VECTORS, folder)).map((f) => join(VECTORS, folder, f))
      const result = await runCli(['inspect', '--json', ...files])
      expect(result.code).toBe(0)
      const lines = result.stdout.toString().trim().split('\n').map((l) => JSON.parse(l))
      expect(lines).toHaveLength(files.length)
      for (const line of lines) {
        expect(Object.keys(line).sort()).toEqual(['header', 'input'])
        expect(line.header).toEqual(expected.get(relative(VECTORS, line.input)))
      }
    }
  })

  it('prints a readable table: suite, signed or not, frame length, context, key provider names as text', async () => {
    const result = await runCli(['inspect', join(VECTORS, 'ciphertext-default', 'one-byte.bin'), join(VECTORS, 'ciphertext-unsigned', 'one-byte.bin')])
    const text = result.stdout.toString()
    expect(text).toContain('AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384 (0x0578)')
    expect(text).toContain('signed (ECDSA), key commitment')
    expect(text).toContain('unsigned, key commitment')
    expect(text).toContain('2.0, framed, 4096-byte frames')
    expect(text).toMatch(/context +aws-crypto-public-key=/)
    expect(text).toContain('provider envcrypt-test, key key1 (raw AES, 16-byte tag, 12-byte IV)')
  })

  it('reports a bad file in one line naming it, still prints the others, and exits 1', async () => {
    const dir = tempDir()
    writeFileSync(join(dir, 'not-a-message.txt'), 'hello')
    const good = join(VECTORS, 'ciphertext-unsigned', 'one-byte.bin')
    const result = await runCli(['inspect', '--json', join(dir, 'not-a-message.txt'), good, join(dir, 'missing')])
    expect(result.code).toBe(1)
    expect(result.stdout.toString().trim().split('\n')).toHaveLength(1)
    const errors = result.stderr.trim().split('\n')
    expect(errors).toHaveLength(2)
    expect(errors[0]).toMatch(new RegExp(`^envcrypt: error: ${join(dir, 'not-a-message.txt')}: not an AWS Encryption SDK message`))
    expect(errors[1]).toMatch(/missing: no such file or directory/)
  })
})

describe('reencrypt', () => {
  it('moves a tree to new keys, keeping names and the encryption context; the old key no longer opens it', async () => {
    const { dir, input, key: oldKey } = setup()
    const newKey = rawAesKey(dir, 'k2')
    await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...oldKey.spec, '-c', 'team=data', '-S', '--suffix'])
    const from = ['-W', ...oldKey.spec.slice(1)]
    const result = await runCli(['reencrypt', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'rotated'), ...from, ...newKey.spec, '-c', 'team=data', '--metadata-output', join(dir, 'meta.jsonl'), '-v'])
    expect(result.stderr).toMatch(/re-encrypted 3 files/)
    expect(result.code).toBe(0)
    expect(listFiles(join(dir, 'rotated'))).toEqual(listFiles(input))
    // Nothing but messages was written: no plaintext marker anywhere under the output.
    for (const file of listFiles(join(dir, 'rotated'))) expect(readFileSync(join(dir, 'rotated', file)).includes('PLAINTEXT-MARKER')).toBe(false)
    const records = readJsonLines(join(dir, 'meta.jsonl'))
    expect(records).toHaveLength(3)
    for (const record of records) {
      expect(record.mode).toBe('encrypt')
      expect(record.header.encryption_context.team).toBe('data')
      expect(Buffer.from(record.header.encrypted_data_keys[0].key_provider.key_info, 'base64').subarray(0, 2).toString()).toBe('k2')
    }
    const back = await runCli(['-d', '-r', '-i', join(dir, 'rotated'), '-o', join(dir, 'back'), ...newKey.spec, '-c', 'team=data', '-S', '--suffix'])
    expect(back.code).toBe(0)
    for (const file of listFiles(input)) expect(readFileSync(join(dir, 'back', file))).toEqual(readFileSync(join(input, file)))
    const old = await runCli(['-d', '-r', '-i', join(dir, 'rotated'), '-o', join(dir, 'old'), ...oldKey.spec, '-S', '--suffix'])
    expect(old.code).toBe(1)
  })

  it('leaves nothing behind for a file the old keys cannot open, and counts it as failed', async () => {
    const { dir, input, key } = setup()
    const other = rawAesKey(dir, 'other')
    await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...key.spec, '-S'])
    const result = await runCli(['reencrypt', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'rotated'), '-W', ...other.spec.slice(1), ...key.spec, '-S', '--summary', '-'])
    expect(result.code).toBe(1)
    const summary = JSON.parse(result.stdout.toString())
    expect(summary.files_failed).toBe(3)
    expect(existsSync(join(dir, 'rotated')) ? readdirSync(join(dir, 'rotated'), { recursive: true }).filter((f) => !String(f).endsWith('sub')) : []).toEqual([])
  })

  it('a tampered signature footer: the new message is never renamed into place (watched with fs.watch), nothing remains, exit 1', async () => {
    const { dir, key: oldKey } = setup()
    const newKey = rawAesKey(dir, 'k2')
    writeTree(join(dir, 'one'), { 'big.bin': randomBytes(50_000) })
    await runCli(['-e', '-r', '-i', join(dir, 'one'), '-o', join(dir, 'enc'), ...oldKey.spec, '-S', '--suffix'])
    const message = readFileSync(join(dir, 'enc', 'big.bin'))
    message[message.length - 1] ^= 1 // inside the ECDSA signature: every frame still authenticates
    writeFileSync(join(dir, 'enc', 'big.bin'), message)
    mkdirSync(join(dir, 'rotated'))
    const seen: string[] = []
    const watcher = watch(join(dir, 'rotated'), (_event, name) => name && seen.push(String(name)))
    let result
    try {
      result = await runCli(['reencrypt', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'rotated'), '-W', ...oldKey.spec.slice(1), ...newKey.spec, '-S'])
    } finally {
      watcher.close()
    }
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(/big\.bin: .*signature/)
    // The new message was being written (its temporary appeared), yet no event ever names the final file.
    expect(seen.some((name) => name.startsWith('.envcrypt-tmp-'))).toBe(true)
    expect(seen).not.toContain('big.bin')
    expect(readdirSync(join(dir, 'rotated'))).toEqual([])
  })

  it('refuses to run without the old keys, with a hint', async () => {
    const { dir, input, key } = setup()
    const result = await runCli(['reencrypt', '-i', input, '-o', join(dir, 'x'), ...key.spec, '-S'])
    expect(result.code).toBe(2)
    expect(result.stderr.trim()).toBe('envcrypt: error: reencrypt needs the old keys (-W/--from-wrapping-keys) and the new ones (-w) (see envcrypt reencrypt --help)')
  })
})

describe('help, completion and errors', () => {
  it('every command has --help with real examples', async () => {
    for (const command of [[], ['keygen'], ['local-kms'], ['reencrypt'], ['inspect'], ['report']]) {
      const result = await runCli([...command, '--help'])
      expect(result.code).toBe(0)
      expect(result.stdout.toString()).toMatch(/Examples:\n +envcrypt /)
    }
  })

  it('envcrypt completion prints a bash completion script, and completions list the commands', async () => {
    const script = (await runCli(['completion'])).stdout.toString()
    expect(script).toContain('envcrypt --get-yargs-completions')
    expect(script).toContain('complete -o bashdefault -o default -F')
    const commands = (await runCli(['--get-yargs-completions', 'envcrypt', ''])).stdout.toString().split('\n')
    expect(commands).toEqual(expect.arrayContaining(['keygen', 'local-kms', 'reencrypt', 'inspect', 'report', 'completion']))
  })

  it('bad flags give one line with a pointer to --help and exit 2', async () => {
    const result = await runCli(['-e', '--bogus-flag'])
    expect(result.code).toBe(2)
    expect(result.stderr.trim().split('\n')).toEqual(['envcrypt: error: Unknown argument: --bogus-flag (see envcrypt --help)'])
    const two = await runCli(['-e', '--bogus-flag', '--colour'])
    expect(two.code).toBe(2)
    expect(two.stderr.trim().split('\n')).toEqual(['envcrypt: error: Unknown arguments: --bogus-flag, --colour (see envcrypt --help)'])
  })
})

describe('terminal output', () => {
  it('the end summary is one screen: files ok/failed/skipped, bytes, time, KMS calls and failures', () => {
    const text = renderEndSummary(
      { files_ok: 198, files_failed: 1, files_skipped: 1, bytes_in: 1_024_000_000, bytes_out: 1_030_000_000, seconds: 4.2, failures: [{ input: 'x.bin', error: 'permission denied: x.bin' }], kms_calls: { GenerateDataKey: 2 } },
      'encrypted',
    )
    expect(text.split('\n')).toEqual([
      'envcrypt: encrypted 198 files of 200 in 4.2s',
      '  files      198 ok, 1 failed, 1 skipped',
      '  bytes      1.02 GB in, 1.03 GB out, 244 MB/s',
      '  KMS calls: GenerateDataKey=2',
      '  failed:',
      '    x.bin: permission denied: x.bin',
    ])
  })

  const scriptSkipReason = hasScript() ? '' : ' (skipped: the script command, which gives the CLI a pseudo-terminal, is not installed)'
  it.skipIf(scriptSkipReason !== '')(`on a TTY shows a progress bar and the summary block; with -q nothing${scriptSkipReason}`, async () => {
    const { dir, input, key } = setup()
    // Enough work (the reference engine, one file at a time) for the bar to draw a few times.
    writeTree(input, Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`big/${i}.bin`, randomBytes(1_000_000)])))
    const run = (extra: string[]) => {
      const command = [process.execPath, CLI, '-e', '-r', '-i', input, '-o', join(dir, `enc${extra.length}`), ...key.spec, '-S', '--engine', 'sdk', '-j', '1', ...extra].map(shellQuote).join(' ')
      // `script` gives the CLI a pseudo-terminal, as a person's shell would.
      return execFileSync('script', ['-qec', command, '/dev/null'], { encoding: 'utf8', env: { ...process.env, COLUMNS: '120' } })
    }
    const screen = run([])
    expect(screen).toMatch(/\d+% \| \d+\/23 files \| [\d.]+ [kM]B\/[\d.]+ MB \| .* \| ETA/)
    expect(screen).toContain('envcrypt: encrypted 23 files of 23')
    expect(screen).toContain('  files      23 ok, 0 failed, 0 skipped')
    expect(run(['-q']).trim()).toBe('')
  })

  it.skipIf(scriptSkipReason !== '')(`on a 60-column TTY the progress line fits, with bytes, rate and ETA; no "ETA 0s" before any progress${scriptSkipReason}`, async () => {
    const { dir, input, key } = setup()
    writeTree(input, Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`big/${i}.bin`, randomBytes(1_000_000)])))
    const command = [process.execPath, CLI, '-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...key.spec, '-S', '--engine', 'sdk', '-j', '1'].map(shellQuote).join(' ')
    const screen = execFileSync('script', ['-qec', `stty cols 60 rows 20; ${command}`, '/dev/null'], { encoding: 'utf8', timeout: 280_000 })
    // Each redraw of the bar: the text after the last carriage return or cursor move on a line.
    const drawn = screen.split(/\r|\n|\x1b\[[0-9;]*[A-Za-z]/).filter((part) => / files \| /.test(part))
    expect(drawn.length).toBeGreaterThan(0)
    for (const line of drawn) {
      expect(line.length, line).toBeLessThanOrEqual(60)
      expect(line, line).toMatch(/\| [\d.]+ [kM]?B\/[\d.]+ MB \| (…|[\d.]+ [kM]?B\/s) \| ETA (…|\d)/)
      if (/ 0% /.test(line)) expect(line).not.toMatch(/ETA 0s/)
    }
  }, 300_000)

  it('off a TTY a clean run prints nothing (as the official CLI); -v adds the one-line summary', async () => {
    const { dir, input, key } = setup()
    const quiet = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...key.spec, '-S'])
    expect(quiet.code).toBe(0)
    expect(quiet.stderr).toBe('')
    const result = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc2'), ...key.spec, '-S', '-v'])
    expect(result.stderr.trim().split('\n').filter((line) => !line.startsWith('envcrypt: ok: '))).toEqual([expect.stringMatching(/^envcrypt: encrypted 3 files; /)])
  })
})

function hasScript(): boolean {
  return spawnSync('script', ['--version']).status === 0
}

function shellQuote(arg: string): string {
  return `'${arg.replace(/'/g, `'\\''`)}'`
}
