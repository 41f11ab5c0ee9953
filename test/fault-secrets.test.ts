// Secrets as a spec: key material and plaintext never appear in logs, metadata, summaries, error messages or
// process arguments; key files with loose permissions warn; files envcrypt creates for secrets are 0600.
import { describe, expect, it } from 'vitest'
import { chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { CLI, rawAesKey, runCli, tempDir, writeTree } from './helpers/cli.js'
import { spawnCli, temporariesUnder, waitFor } from './helpers/faults.js'

/** Every spelling of `secret` a leak could take: raw, hex, base64, base64url. */
function spellings(secret: Buffer): string[] {
  return [secret.toString('latin1'), secret.toString('hex'), secret.toString('hex').toUpperCase(), secret.toString('base64'), secret.toString('base64url')]
}

function expectNoLeak(where: string, text: string | Buffer, secrets: Buffer[]) {
  const haystack = Buffer.isBuffer(text) ? text.toString('latin1') : text
  for (const secret of secrets) for (const spelling of spellings(secret)) expect(haystack.includes(spelling), `${where} leaks a secret`).toBe(false)
}

describe('no key material or plaintext outside the ciphertext', () => {
  it('stderr (-v), metadata, summary and error messages of encrypt, decrypt and failing decrypts hold neither the key nor the plaintext', async () => {
    const dir = tempDir('envcrypt-secrets-')
    const key = rawAesKey(dir)
    const keyBytes = readFileSync(key.path)
    const plaintext = Buffer.from(`TOP-SECRET-${randomBytes(16).toString('hex')}`)
    writeTree(join(dir, 'in'), { 'secret.txt': plaintext, 'other.txt': plaintext })
    const meta = join(dir, 'meta.jsonl')
    const outputs: Array<[string, string | Buffer]> = []
    const run = async (label: string, args: string[]) => {
      const result = await runCli([...args, '-v', '--metadata-output', meta, '--summary', join(dir, `${label}.json`)])
      outputs.push([`${label} stderr`, result.stderr], [`${label} stdout`, result.stdout], [`${label} summary`, readFileSync(join(dir, `${label}.json`))])
      return result
    }
    expect((await run('encrypt', ['-e', '-r', '-i', join(dir, 'in'), '-o', join(dir, 'enc'), ...key.spec, '-c', 'purpose=test'])).code).toBe(0)
    expect((await run('decrypt', ['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'dec'), ...key.spec])).code).toBe(0)
    // Failures after plaintext was produced: a tampered final frame (frames before it were decrypted) and a
    // context mismatch; and a wrong key.
    const tampered = readFileSync(join(dir, 'enc', 'secret.txt.encrypted'))
    tampered[tampered.length - 110] ^= 1
    writeFileSync(join(dir, 'enc', 'secret.txt.encrypted'), tampered)
    expect((await run('tampered', ['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'dec2'), ...key.spec])).code).toBe(1)
    expect((await run('context', ['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'dec3'), ...key.spec, '-c', 'purpose=other'])).code).toBe(1)
    const wrong = rawAesKey(dir, 'k1-wrong')
    const wrongSpec = ['-w', 'provider=raw-aes', 'key=k1', `material=file://${wrong.path}`]
    expect((await run('wrong-key', ['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'dec4'), ...wrongSpec])).code).toBe(1)
    outputs.push(['metadata', readFileSync(meta)])
    for (const [where, text] of outputs) expectNoLeak(where, text, [keyBytes, readFileSync(wrong.path), plaintext])
    expect(temporariesUnder(dir)).toEqual([])
  })

  it('the running CLI has no key bytes in its arguments (/proc/PID/cmdline), and its in-flight temporary is 0600', async () => {
    const dir = tempDir('envcrypt-secrets-')
    const key = rawAesKey(dir)
    const keyBytes = readFileSync(key.path)
    const enc = await runCli(['-e', '-i', '-', '-o', join(dir, 'm.enc'), ...key.spec, '-S'], { input: randomBytes(200_000) })
    expect(enc.code).toBe(0)
    // Decrypt from a held-open stdin: the process is alive, its plaintext temporary exists.
    const run = spawnCli(['-d', '-i', '-', '-o', join(dir, 'plain.out'), ...key.spec, '-S'], { keepStdinOpen: true })
    run.child.stdin!.write(readFileSync(join(dir, 'm.enc')).subarray(0, 150_000))
    expect(await waitFor(() => temporariesUnder(dir).length === 1)).toBe(true)
    const cmdline = readFileSync(`/proc/${run.child.pid}/cmdline`)
    expectNoLeak('cmdline', cmdline, [keyBytes])
    expect(cmdline.toString()).toContain(`material=file://${key.path}`)
    expect(statSync(join(dir, temporariesUnder(dir)[0])).mode & 0o777).toBe(0o600)
    run.child.kill('SIGINT')
    expect((await run.result).code).toBe(130)
    expect(temporariesUnder(dir)).toEqual([])
  })
})

describe('key files', () => {
  for (const mode of [0o640, 0o604]) {
    it(`a raw key file with mode ${mode.toString(8)} (group/world bits) warns with the chmod fix`, async () => {
      const dir = tempDir('envcrypt-secrets-')
      const key = rawAesKey(dir)
      chmodSync(key.path, mode)
      writeTree(join(dir, 'in'), { 'a.txt': 'a' })
      const result = await runCli(['-e', '-r', '-i', join(dir, 'in'), '-o', join(dir, 'enc'), ...key.spec, '-S'])
      expect(result.code).toBe(0)
      expect(result.stderr).toContain(`warning: key file ${key.path} is readable by group or others; run: chmod 600 ${key.path}`)
    })
  }

  it('a raw key file with mode 600 or 400 does not warn', async () => {
    const dir = tempDir('envcrypt-secrets-')
    const key = rawAesKey(dir)
    writeTree(join(dir, 'in'), { 'a.txt': 'a' })
    for (const mode of [0o600, 0o400]) {
      chmodSync(key.path, mode)
      const result = await runCli(['-e', '-r', '-i', join(dir, 'in'), '-o', join(dir, `enc-${mode}`), ...key.spec, '-S'])
      expect(result.stderr).not.toMatch(/warning/)
    }
  })

  it('keygen creates its key file 0600 even under umask 000, and never prints the key', async () => {
    const dir = tempDir('envcrypt-secrets-')
    const path = join(dir, 'new.key')
    const stderr = execFileSync('sh', ['-c', `umask 000; "${process.execPath}" "${CLI}" keygen --out "${path}" 2>&1`]).toString()
    expect(statSync(path).mode & 0o777).toBe(0o600)
    expectNoLeak('keygen output', stderr, [readFileSync(path)])
  })
})
