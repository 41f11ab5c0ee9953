// Hostile messages as a spec: limits are enforced from the header, before anything large is read or
// allocated, and each refusal is one line naming the file and the cause; nothing is written.
import { describe, expect, it } from 'vitest'
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { randomBytes } from 'node:crypto'
import { rawAesKey, runCli, tempDir, writeTree } from './helpers/cli.js'
import { expectUntouched, spawnCli } from './helpers/faults.js'

/** A v2 header prefix (suite 0x0578) claiming `edkCount` encrypted data keys, each field claiming 65,535 bytes. */
function hugeEdkClaim(totalBytes: number, edkCount = 0xffff): Buffer {
  const bytes = Buffer.alloc(totalBytes)
  let at = 0
  bytes[at++] = 2
  at = bytes.writeUInt16BE(0x0578, at)
  at += 32 // message id
  at = bytes.writeUInt16BE(0, at) // no encryption context
  at = bytes.writeUInt16BE(edkCount, at)
  for (; at + 2 <= bytes.length; at += 0x10001) bytes.writeUInt16BE(0xffff, at)
  return bytes
}

/** Feed `data` to the CLI's stdin in 256 KiB pieces until it exits; returns its result and the bytes it took. */
async function feedUntilExit(args: string[], data: Buffer) {
  const rssFile = join(tempDir('envcrypt-rss-'), 'max-rss')
  const preload = fileURLToPath(new URL('./helpers/max-rss-preload.cjs', import.meta.url))
  const run = spawnCli(args, { keepStdinOpen: true, env: { NODE_OPTIONS: `--require ${preload}`, ENVCRYPT_TEST_MAX_RSS_FILE: rssFile } })
  let exited = false
  run.result.then(() => (exited = true))
  let fed = 0
  try {
    while (!exited && fed < data.length) {
      const piece = data.subarray(fed, fed + 256 * 1024)
      const ok = run.child.stdin!.write(piece)
      fed += piece.length
      if (!ok) await new Promise((resolve) => { run.child.stdin!.once('drain', resolve); run.child.once('close', resolve) })
    }
    run.child.stdin!.end()
  } catch {
    /* EPIPE: the CLI stopped reading */
  }
  const result = await run.result
  // The CLI's own peak (getrusage), written as it exited: present whenever the CLI ran at all.
  const peakRss = Number(readFileSync(rssFile, 'utf8'))
  return { result, fed, peakRss }
}

describe('hostile messages are refused from the header', () => {
  const decrypt = (dir: string, input: string, key: { spec: string[] }, ...extra: string[]) =>
    runCli(['-d', '-i', input, '-o', join(dir, 'out'), ...key.spec, '-S', ...extra])

  it('more encrypted data keys than --max-encrypted-data-keys: refused before any key is unwrapped', async () => {
    const dir = tempDir('envcrypt-hostile-')
    const keys = [rawAesKey(dir, 'k1'), rawAesKey(dir, 'k2'), rawAesKey(dir, 'k3')]
    writeTree(join(dir, 'in'), { 'a.txt': 'three keys' })
    await runCli(['-e', '-i', join(dir, 'in', 'a.txt'), '-o', join(dir, 'a.enc'), ...keys.flatMap((k) => k.spec), '-S'])
    const result = await expectUntouched([dir + '/in'], () => decrypt(dir, join(dir, 'a.enc'), keys[0], '--max-encrypted-data-keys', '2'))
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(/a\.enc: message has more encrypted data keys than --max-encrypted-data-keys allows/)
    expect(existsSync(join(dir, 'out'))).toBe(false)
  })

  it('an unknown algorithm suite id is refused by name', async () => {
    const dir = tempDir('envcrypt-hostile-')
    const key = rawAesKey(dir)
    const bytes = hugeEdkClaim(1024, 1)
    bytes.writeUInt16BE(0x0999, 1)
    writeFileSync(join(dir, 'odd-suite.bin'), bytes)
    const result = await decrypt(dir, join(dir, 'odd-suite.bin'), key)
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(/odd-suite\.bin: unsupported or unknown algorithm suite/)
    expect(existsSync(join(dir, 'out'))).toBe(false)
  })

  it('a frame length beyond --max-length is refused before the body is read (both engines)', async () => {
    const dir = tempDir('envcrypt-hostile-')
    const key = rawAesKey(dir)
    writeTree(join(dir, 'in'), { 'big-frames.bin': randomBytes(300_000) })
    await runCli(['-e', '-i', join(dir, 'in', 'big-frames.bin'), '-o', join(dir, 'a.enc'), ...key.spec, '-S', '--frame-length', '1048576'])
    for (const engine of ['js', 'sdk']) {
      const result = await decrypt(dir, join(dir, 'a.enc'), key, '--max-length', '65536', '--engine', engine)
      expect(result.code, engine).toBe(1)
      expect(result.stderr, engine).toMatch(/a\.enc: .*(exceeds the maximum body size 65536|--max-length)/)
      expect(existsSync(join(dir, 'out')), engine).toBe(false)
    }
  })

  it('files that are not Encryption SDK messages (text, random bytes, empty) are each refused with one line', async () => {
    const dir = tempDir('envcrypt-hostile-')
    const key = rawAesKey(dir)
    writeTree(join(dir, 'in'), { 'notes.txt': 'just some text\n', 'noise.bin': randomBytes(100_000), 'empty': '' })
    const result = await expectUntouched([join(dir, 'in')], () => runCli(['-d', '-r', '-i', join(dir, 'in'), '-o', join(dir, 'out'), ...key.spec, '-S', '-q']))
    expect(result.code).toBe(1)
    const lines = result.stderr.trim().split('\n').sort()
    expect(lines).toHaveLength(3)
    expect(lines[0]).toMatch(/in\/empty: empty input: not an AWS Encryption SDK message/)
    expect(lines[1]).toMatch(/in\/noise\.bin: .*(not an AWS Encryption SDK message|unsupported)/i)
    expect(lines[2]).toMatch(/in\/notes\.txt: not an AWS Encryption SDK message/)
    expect(existsSync(join(dir, 'out')) ? readdirSync(join(dir, 'out')) : []).toEqual([])
  })

  it('a header claiming 65,535 encrypted data keys of 64 KiB fields: refused at once with --max-encrypted-data-keys, and after at most 16 MiB without it (64 MiB offered)', async () => {
    const dir = tempDir('envcrypt-hostile-')
    const key = rawAesKey(dir)
    const hostile = hugeEdkClaim(64 * 1024 * 1024)
    const args = ['-d', '-i', '-', '-o', join(dir, 'out'), ...key.spec, '-S']
    const limited = await feedUntilExit([...args, '--max-encrypted-data-keys', '10'], hostile)
    expect(limited.result.code).toBe(1)
    expect(limited.result.stderr).toMatch(/<stdin>: message has more encrypted data keys than --max-encrypted-data-keys allows/)
    expect(limited.fed).toBeLessThan(4 * 1024 * 1024)
    const unlimited = await feedUntilExit(args, hostile)
    expect(unlimited.result.code).toBe(1)
    expect(unlimited.result.stderr).toMatch(/<stdin>: not an AWS Encryption SDK message \(no valid header in the first 16 MiB\)/)
    expect(unlimited.fed).toBeLessThan(24 * 1024 * 1024)
    // Node and the AWS SDK alone take ~85 MB; the bounded header buffer adds about 40 MB (measured 125-130 MB peak).
    expect(unlimited.peakRss).toBeGreaterThan(20 * 1024 * 1024)
    expect(unlimited.peakRss).toBeLessThan(200 * 1024 * 1024)
    expect(existsSync(join(dir, 'out'))).toBe(false)
  })

  it('a header claiming a 65,535-byte encryption context in a short file: refused as truncated, nothing written', async () => {
    const dir = tempDir('envcrypt-hostile-')
    const key = rawAesKey(dir)
    const bytes = hugeEdkClaim(2000, 1)
    bytes.writeUInt16BE(0xffff, 35) // the AAD (encryption context) length
    writeFileSync(join(dir, 'ctx.bin'), bytes)
    const result = await decrypt(dir, join(dir, 'ctx.bin'), key)
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(/ctx\.bin: (truncated or invalid message header|not an AWS Encryption SDK message)/)
    expect(existsSync(join(dir, 'out'))).toBe(false)
  })
})
