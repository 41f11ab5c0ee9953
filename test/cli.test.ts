// The core CLI as a spec: each test runs the real binary in a temporary directory.
import { describe, expect, it } from 'vitest'
import { chmodSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { basename, join } from 'node:path'
import { randomBytes, generateKeyPairSync } from 'node:crypto'
import { spawn } from 'node:child_process'
import { buildClient, CommitmentPolicy, RawAesKeyringNode, RawAesWrappingSuiteIdentifier } from '@aws-crypto/client-node'
import { CLI, listFiles, rawAesKey, readJsonLines, runCli, tempDir, VECTORS, writeTree } from './helpers/cli.js'

/** The CLI under `strace -f` (every thread), logging its fsync/fdatasync calls to `trace`. Asynchronous: a
 *  synchronous spawn would block this process. */
function runStraced(trace: string, args: string[]): Promise<{ status: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('strace', ['-f', '-qq', '-e', 'trace=fsync,fdatasync', '-o', trace, process.execPath, CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (d) => (stderr += d))
    child.on('error', reject)
    child.on('close', (status) => resolve({ status, stderr }))
  })
}

const TREE: Record<string, Buffer | string> = {
  'empty.txt': '',
  'one-byte.bin': 'x',
  'frame-minus-one.bin': randomBytes(4095),
  'frame-exact.bin': randomBytes(4096),
  'several-frames.bin': randomBytes(4096 * 5 + 17),
  'nested/deeper dir/héllo wörld ✓ 日本.txt': 'unicode name\n',
  'nested/file with spaces.txt': 'spaces\n',
  '.hidden': 'dot files are files too',
}

function setup(files: Record<string, Buffer | string> = TREE) {
  const dir = tempDir()
  writeTree(join(dir, 'in'), files)
  const key = rawAesKey(dir)
  return { dir, key, input: join(dir, 'in') }
}

describe('round trips', () => {
  it('encrypts a tree recursively and decrypts it back byte for byte, mirroring names with suffixes', async () => {
    const { dir, key, input } = setup()
    const enc = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...key.spec, '-S'])
    expect(enc.stderr).not.toMatch(/error/)
    expect(enc.code).toBe(0)
    expect(listFiles(join(dir, 'enc'))).toEqual(listFiles(input).map((f) => `${f}.encrypted`))
    const dec = await runCli(['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'dec'), ...key.spec, '-S'])
    expect(dec.code).toBe(0)
    for (const file of listFiles(input)) {
      expect(readFileSync(join(dir, 'dec', `${file}.encrypted.decrypted`))).toEqual(readFileSync(join(input, file)))
    }
  })

  it('round-trips a 20 MiB file with bounded memory and keeps no temporary behind', async () => {
    const { dir, key, input } = setup({ 'big.bin': randomBytes(20 * 1024 * 1024) })
    expect((await runCli(['-e', '-i', join(input, 'big.bin'), '-o', join(dir, 'big.enc'), ...key.spec, '-S'])).code).toBe(0)
    expect((await runCli(['-d', '-i', join(dir, 'big.enc'), '-o', join(dir, 'big.out'), ...key.spec, '-S'])).code).toBe(0)
    expect(readFileSync(join(dir, 'big.out')).equals(readFileSync(join(input, 'big.bin')))).toBe(true)
    expect(readdirSync(dir).filter((f) => f.startsWith('.envcrypt-tmp-'))).toEqual([])
  })

  it('file to file writes exactly the named output; a file into a directory gets the suffix', async () => {
    const { dir, key, input } = setup({ 'a.txt': 'alpha' })
    mkdirSync(join(dir, 'outdir'))
    expect((await runCli(['-e', '-i', join(input, 'a.txt'), '-o', join(dir, 'named.bin'), ...key.spec, '-S'])).code).toBe(0)
    expect(existsSync(join(dir, 'named.bin'))).toBe(true)
    expect((await runCli(['-e', '-i', join(input, 'a.txt'), '-o', join(dir, 'outdir'), ...key.spec, '-S'])).code).toBe(0)
    expect(readdirSync(join(dir, 'outdir'))).toEqual(['a.txt.encrypted'])
  })

  it('creates a missing output directory, unlike aws-encryption-cli', async () => {
    const { dir, key, input } = setup({ 'a.txt': 'alpha' })
    const result = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'new', 'deep'), ...key.spec, '-S'])
    expect(result.code).toBe(0)
    expect(readdirSync(join(dir, 'new', 'deep'))).toEqual(['a.txt.encrypted'])
  })

  it('bare --suffix keeps names; --suffix S appends S', async () => {
    const { dir, key, input } = setup({ 'a.txt': 'alpha' })
    await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), '--suffix', '.aes', ...key.spec, '-S'])
    expect(readdirSync(join(dir, 'enc'))).toEqual(['a.txt.aes'])
    await runCli(['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'dec'), '--suffix', ...key.spec, '-S'])
    expect(readFileSync(join(dir, 'dec', 'a.txt.aes'), 'utf8')).toBe('alpha')
  })

  it('outputs keep the input permission bits, never wider', async () => {
    const { dir, key, input } = setup({ 'secret.txt': 'private', 'shared.txt': 'public' })
    chmodSync(join(input, 'secret.txt'), 0o600)
    chmodSync(join(input, 'shared.txt'), 0o640)
    await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...key.spec, '-S'])
    expect(statSync(join(dir, 'enc', 'secret.txt.encrypted')).mode & 0o777).toBe(0o600)
    expect(statSync(join(dir, 'enc', 'shared.txt.encrypted')).mode & 0o777).toBe(0o640)
    // Decrypt keeps its input's mode too (the message's, here the same bits).
    chmodSync(join(dir, 'enc', 'shared.txt.encrypted'), 0o604)
    expect((await runCli(['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'dec'), '--suffix', ...key.spec, '-S'])).code).toBe(0)
    expect(statSync(join(dir, 'dec', 'secret.txt.encrypted')).mode & 0o777).toBe(0o600)
    expect(statSync(join(dir, 'dec', 'shared.txt.encrypted')).mode & 0o777).toBe(0o604)
  })

  it('pipes: stdin to stdout both ways, with --encode/--decode base64 and --buffer', async () => {
    const { dir, key } = setup({})
    const plaintext = randomBytes(10_000)
    const enc = await runCli(['-e', '-i', '-', '-o', '-', '--encode', ...key.spec, '-S'], { input: plaintext })
    expect(enc.code).toBe(0)
    expect(enc.stdout.toString()).toMatch(/^[A-Za-z0-9+/=]+$/)
    const dec = await runCli(['-d', '-i', '-', '-o', '-', '--decode', '--buffer', ...key.spec, '-S'], { input: enc.stdout, cwd: dir })
    expect(dec.code).toBe(0)
    expect(dec.stdout.equals(plaintext)).toBe(true)
  })

  it('--buffer writes nothing to stdout when the message fails authentication', async () => {
    const { key } = setup({})
    const enc = await runCli(['-e', '-i', '-', '-o', '-', ...key.spec, '-S'], { input: randomBytes(50_000) })
    const tampered = Buffer.from(enc.stdout)
    tampered[tampered.length - 200] ^= 1
    const dec = await runCli(['-d', '-i', '-', '-o', '-', '--buffer', ...key.spec, '-S'], { input: tampered })
    expect(dec.code).toBe(1)
    expect(dec.stdout.length).toBe(0)
    expect(dec.stderr).toMatch(/<stdin>/)
  })

  it('expands glob patterns, mirroring paths under the pattern base', async () => {
    const { dir, key, input } = setup({ 'a.csv': '1', 'b.csv': '2', 'c.txt': '3', 'sub/d.csv': '4' })
    const result = await runCli(['-e', '-i', `${input}/**/*.csv`, '-o', join(dir, 'enc'), ...key.spec, '-S'])
    expect(result.code).toBe(0)
    expect(listFiles(join(dir, 'enc'))).toEqual(['a.csv.encrypted', 'b.csv.encrypted', 'sub/d.csv.encrypted'])
  })

  it('without -r a directory input is skipped with a warning and exit 0, as aws-encryption-cli', async () => {
    const { dir, key, input } = setup({ 'a.txt': 'a' })
    const result = await runCli(['-e', '-i', input, '-o', join(dir, 'enc'), ...key.spec, '-S'])
    expect(result.code).toBe(0)
    expect(result.stderr).toMatch(/skipping directory .* use -r/)
    expect(existsSync(join(dir, 'enc', 'a.txt.encrypted'))).toBe(false)
  })
})

describe('metadata and summary', () => {
  it('writes one sorted-key JSON line per file, shaped like aws-encryption-cli, and the jq audit counts data keys', async () => {
    const { dir, key, input } = setup()
    const meta = join(dir, 'meta.jsonl')
    await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...key.spec, '--metadata-output', meta, '-c', 'team=data'])
    const lines = readFileSync(meta, 'utf8').trim().split('\n')
    expect(lines).toHaveLength(Object.keys(TREE).length)
    const record = JSON.parse(lines[0])
    expect(Object.keys(record)).toEqual(['header', 'input', 'mode', 'output'])
    expect(Object.keys(record.header)).toEqual(['algorithm', 'commitment_key', 'content_type', 'encrypted_data_keys', 'encryption_context', 'frame_length', 'header_iv_length', 'message_id', 'type', 'version'])
    expect(record.header).toMatchObject({ algorithm: 'AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384', content_type: 2, frame_length: 4096, header_iv_length: null, type: null, version: '2.0' })
    expect(record.header.encryption_context.team).toBe('data')
    expect(Buffer.from(record.header.encrypted_data_keys[0].key_provider.provider_id, 'base64').toString()).toBe('envcrypt')
    expect(Buffer.from(record.header.encrypted_data_keys[0].key_provider.key_info, 'base64').subarray(0, 2).toString()).toBe('k1')
    expect(record.mode).toBe('encrypt')
    // The anchor's audit: distinct data keys = files when not caching.
    const distinct = new Set(lines.map((l) => JSON.parse(l).header.encrypted_data_keys[0].encrypted_data_key))
    expect(distinct.size).toBe(lines.length)
    // Non-ASCII names are escaped as \uXXXX, as Python's json.dumps does.
    expect(readFileSync(meta, 'utf8')).toContain('h\\u00e9llo')
  })

  it('decrypt metadata adds header_auth; appends by default and --overwrite-metadata replaces', async () => {
    const { dir, key, input } = setup({ 'a.txt': 'a' })
    const meta = join(dir, 'meta.jsonl')
    await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...key.spec, '--metadata-output', meta])
    await runCli(['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'dec'), ...key.spec, '--metadata-output', meta])
    const records = readJsonLines(meta)
    expect(records.map((r) => r.mode)).toEqual(['encrypt', 'decrypt'])
    expect(Object.keys(records[1].header_auth)).toEqual(['iv', 'tag'])
    expect(records[0].header_auth).toBeUndefined()
    await runCli(['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'dec2'), ...key.spec, '--metadata-output', meta, '--overwrite-metadata'])
    expect(readJsonLines(meta)).toHaveLength(1)
  })

  it('requires --metadata-output or -S, as the anchor does', async () => {
    const { dir, key, input } = setup({ 'a.txt': 'a' })
    const result = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...key.spec])
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/--metadata-output.*-S/)
  })

  it('--summary - prints one JSON object with counts, bytes and kms_calls', async () => {
    const { dir, key, input } = setup({ 'a.txt': 'abc', 'b.txt': 'defg' })
    const result = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...key.spec, '-S', '--summary', '-', '-q'])
    const summary = JSON.parse(result.stdout.toString())
    expect(summary).toMatchObject({ files_ok: 2, files_failed: 0, files_skipped: 0, bytes_in: 7, failures: [], kms_calls: {} })
    expect(summary.bytes_out).toBeGreaterThan(7)
    expect(typeof summary.seconds).toBe('number')
    expect(result.stderr).toBe('')
  })

  it('refuses --summary - together with -o -', async () => {
    const { key } = setup({})
    const result = await runCli(['-e', '-i', '-', '-o', '-', ...key.spec, '-S', '--summary', '-'], { input: 'x' })
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/--summary/)
  })
})

describe('failures do not stop the batch', () => {
  it('a bad file fails alone: others are decrypted, nothing is left at its output, exit 1, metadata keeps an error record', async () => {
    const { dir, key, input } = setup({ 'a.txt': 'good one', 'b.txt': 'will be tampered', 'c.txt': 'good two' })
    await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...key.spec, '-S'])
    const target = join(dir, 'enc', 'b.txt.encrypted')
    const bytes = readFileSync(target)
    bytes[bytes.length - 120] ^= 0x40
    writeFileSync(target, bytes)
    writeFileSync(join(dir, 'enc', 'not-a-message.txt'), 'plain text, not an Encryption SDK message')
    const meta = join(dir, 'meta.jsonl')
    const summaryPath = join(dir, 'summary.json')
    const result = await runCli(['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'dec'), '--suffix', ...key.spec, '--metadata-output', meta, '--summary', summaryPath])
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(/b\.txt\.encrypted: .*(authenticat|signature)/)
    expect(result.stderr).toMatch(/not-a-message\.txt: /)
    expect(listFiles(join(dir, 'dec'))).toEqual(['a.txt.encrypted', 'c.txt.encrypted'])
    const summary = JSON.parse(readFileSync(summaryPath, 'utf8'))
    expect(summary.files_ok).toBe(2)
    expect(summary.files_failed).toBe(2)
    expect(summary.failures.map((f: { input: string }) => f.input).sort()).toEqual([target, join(dir, 'enc', 'not-a-message.txt')])
    const records = readJsonLines(meta)
    expect(records.filter((r) => r.error).map((r) => r.input)).toEqual([target])
  })
})

describe('interoperability with aws-encryption-cli (fixtures/vectors, copied from ../shared/vectors)', () => {
  const spec = ['-w', 'provider=raw-aes', 'key=key1', 'namespace=envcrypt-test', `material=file://${join(VECTORS, 'key.bin')}`]
  const plaintexts = join(VECTORS, 'plaintext')

  for (const folder of ['ciphertext-default', 'ciphertext-unsigned']) {
    it(`decrypts ${folder} byte for byte`, async () => {
      const dir = tempDir()
      const result = await runCli(['-d', '-r', '-i', join(VECTORS, folder), '-o', join(dir, 'out'), '--suffix', ...spec, '-S', '-q'])
      expect(result.code).toBe(0)
      const names = listFiles(plaintexts)
      expect(listFiles(join(dir, 'out'))).toEqual(names)
      for (const name of names) expect(readFileSync(join(dir, 'out', name)).equals(readFileSync(join(plaintexts, name)))).toBe(true)
    })
  }

  it('v1 non-committing messages fail under the default policy and decrypt with require-encrypt-allow-decrypt', async () => {
    const dir = tempDir()
    const refused = await runCli(['-d', '-r', '-i', join(VECTORS, 'ciphertext-v1-noncommitting'), '-o', join(dir, 'a'), ...spec, '-S', '-q'])
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(/commitment/i)
    const allowed = await runCli(['-d', '-r', '-i', join(VECTORS, 'ciphertext-v1-noncommitting'), '-o', join(dir, 'b'), '--suffix', ...spec, '-S', '--commitment-policy', 'require-encrypt-allow-decrypt'])
    expect(allowed.code).toBe(0)
    expect(readFileSync(join(dir, 'b', 'one-mib.bin')).equals(readFileSync(join(plaintexts, 'one-mib.bin')))).toBe(true)
  })

  it('--decrypt-unsigned refuses signed messages and accepts unsigned ones', async () => {
    const dir = tempDir()
    const signed = await runCli(['--decrypt-unsigned', '-i', join(VECTORS, 'ciphertext-default', 'one-byte.bin'), '-o', join(dir, 'x'), ...spec, '-S'])
    expect(signed.code).toBe(1)
    expect(signed.stderr).toMatch(/sign/i)
    expect(existsSync(join(dir, 'x'))).toBe(false)
    const unsigned = await runCli(['--decrypt-unsigned', '-i', join(VECTORS, 'ciphertext-unsigned', 'one-byte.bin'), '-o', join(dir, 'y'), ...spec, '--metadata-output', join(dir, 'm')])
    expect(unsigned.code).toBe(0)
    expect(readJsonLines(join(dir, 'm'))[0].mode).toBe('decrypt-unsigned')
  })

  it('metadata for a vector matches the header fields aws-encryption-cli recorded', async () => {
    const dir = tempDir()
    const meta = join(dir, 'm')
    await runCli(['-d', '-i', join(VECTORS, 'ciphertext-v1-noncommitting', 'one-byte.bin'), '-o', join(dir, 'o'), ...spec, '--metadata-output', meta, '--commitment-policy', 'require-encrypt-allow-decrypt'])
    const ours = readJsonLines(meta)[0].header
    const theirs = readJsonLines(join(VECTORS, 'metadata', 'ciphertext-v1-noncommitting.encrypt.json')).find((r) => r.output.endsWith('one-byte.bin')).header
    expect(ours).toEqual(theirs)
  })
})

describe('flags', () => {
  it('-c on decrypt: every pair must match and a bare key must exist; a mismatch fails the file', async () => {
    const { dir, key, input } = setup({ 'a.txt': 'a' })
    await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...key.spec, '-S', '-c', 'team=data', 'env=prod'])
    const ok = await runCli(['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'ok'), ...key.spec, '-S', '-c', 'team=data', 'env'])
    expect(ok.code).toBe(0)
    const bad = await runCli(['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'bad'), ...key.spec, '-S', '-c', 'team=finance'])
    expect(bad.code).toBe(1)
    expect(bad.stderr).toMatch(/a\.txt\.encrypted: encryption context mismatch: "team"/)
    expect(existsSync(join(dir, 'bad', 'a.txt.encrypted.decrypted'))).toBe(false)
    const missing = await runCli(['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'missing'), ...key.spec, '-S', '-c', 'owner'])
    expect(missing.code).toBe(1)
  })

  it('--algorithm, --frame-length and --max-length', async () => {
    const { dir, key, input } = setup({ 'a.bin': randomBytes(70_000) })
    const meta = join(dir, 'm')
    await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...key.spec, '--metadata-output', meta, '--algorithm', 'AES_256_GCM_HKDF_SHA512_COMMIT_KEY', '--frame-length', '65536'])
    expect(readJsonLines(meta)[0].header).toMatchObject({ algorithm: 'AES_256_GCM_HKDF_SHA512_COMMIT_KEY', frame_length: 65536 })
    expect(readJsonLines(meta)[0].header.encryption_context).toEqual({})
    const refused = await runCli(['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'd1'), ...key.spec, '-S', '--max-length', '4096'])
    expect(refused.code).toBe(1)
    const accepted = await runCli(['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'd2'), ...key.spec, '-S', '--max-length', '65536', '--decrypt-unsigned'].filter((a) => a !== '--decrypt-unsigned'))
    expect(accepted.code).toBe(0)
    const unknown = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'x'), ...key.spec, '-S', '--algorithm', 'AES_999'])
    expect(unknown.code).toBe(2)
    expect(unknown.stderr).toMatch(/--algorithm: unknown suite "AES_999"/)
  })

  it('forbid-encrypt-allow-decrypt writes v1 non-committing messages', async () => {
    const { dir, key, input } = setup({ 'a.txt': 'a' })
    const meta = join(dir, 'm')
    await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...key.spec, '--metadata-output', meta, '--commitment-policy', 'forbid-encrypt-allow-decrypt'])
    expect(readJsonLines(meta)[0].header).toMatchObject({ version: '1.0', algorithm: 'AES_256_GCM_IV12_TAG16_HKDF_SHA384_ECDSA_P384', header_iv_length: 12, type: 128, commitment_key: null })
    // The v1 message is read back: by the CLI under a policy that allows it, and by the SDK itself.
    const dec = await runCli(['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'dec'), '--suffix', ...key.spec, '-S', '--commitment-policy', 'require-encrypt-allow-decrypt'])
    expect(dec.code).toBe(0)
    expect(readFileSync(join(dir, 'dec', 'a.txt.encrypted'), 'utf8')).toBe('a')
    const keyring = new RawAesKeyringNode({ keyName: 'k1', keyNamespace: 'envcrypt', unencryptedMasterKey: new Uint8Array(readFileSync(key.path)), wrappingSuite: RawAesWrappingSuiteIdentifier.AES256_GCM_IV12_TAG16_NO_PADDING })
    const { plaintext } = await buildClient(CommitmentPolicy.REQUIRE_ENCRYPT_ALLOW_DECRYPT).decrypt(keyring, readFileSync(join(dir, 'enc', 'a.txt.encrypted')))
    expect(Buffer.from(plaintext).toString()).toBe('a')
  })

  it('several -w groups make a multi-keyring: either key decrypts; --max-encrypted-data-keys refuses more keys', async () => {
    const { dir, key, input } = setup({ 'a.txt': 'multi' })
    const second = rawAesKey(dir, 'k2')
    const meta = join(dir, 'm')
    await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...key.spec, ...second.spec, '--metadata-output', meta])
    expect(readJsonLines(meta)[0].header.encrypted_data_keys).toHaveLength(2)
    for (const [name, k] of [['one', key], ['two', second]] as const) {
      const result = await runCli(['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, name), ...k.spec, '-S'])
      expect(result.code).toBe(0)
    }
    const limited = await runCli(['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'limited'), ...key.spec, '-S', '--max-encrypted-data-keys', '1'])
    expect(limited.code).toBe(1)
    expect(limited.stderr).toMatch(/encrypted data keys/)
  })

  it('raw RSA: a public key encrypts, the private key decrypts, for each padding', async () => {
    const { dir, input } = setup({ 'a.txt': 'rsa' })
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
    writeFileSync(join(dir, 'pub.pem'), publicKey.export({ type: 'spki', format: 'pem' }))
    writeFileSync(join(dir, 'priv.pem'), privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 })
    for (const padding of ['oaep-sha256', 'oaep-sha1']) {
      const spec = (file: string) => ['-w', 'provider=raw-rsa', 'key=rsa1', `padding=${padding}`, `material=file://${join(dir, file)}`]
      expect((await runCli(['-e', '-r', '-i', input, '-o', join(dir, `enc-${padding}`), ...spec('pub.pem'), '-S'])).code).toBe(0)
      const publicOnly = await runCli(['-d', '-r', '-i', join(dir, `enc-${padding}`), '-o', join(dir, 'x'), ...spec('pub.pem'), '-S'])
      expect(publicOnly.code).toBe(2)
      expect(publicOnly.stderr).toMatch(/only a public key/)
      expect((await runCli(['-d', '-r', '-i', join(dir, `enc-${padding}`), '-o', join(dir, `dec-${padding}`), '--suffix', ...spec('priv.pem'), '-S'])).code).toBe(0)
      expect(readFileSync(join(dir, `dec-${padding}`, 'a.txt.encrypted'), 'utf8')).toBe('rsa')
    }
  })

  it('--skip-existing leaves complete outputs alone; --no-overwrite skips instead of replacing', async () => {
    const { dir, key, input } = setup({ 'a.txt': 'a', 'b.txt': 'b' })
    mkdirSync(join(dir, 'enc'))
    writeFileSync(join(dir, 'enc', 'a.txt.encrypted'), 'already there')
    const skip = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...key.spec, '-S', '--summary', join(dir, 's.json')])
    expect(skip.code).toBe(0)
    // Default: overwrite, as the anchor.
    expect(readFileSync(join(dir, 'enc', 'a.txt.encrypted'), 'utf8')).not.toBe('already there')
    writeFileSync(join(dir, 'enc', 'a.txt.encrypted'), 'already there')
    rmSync(join(dir, 'enc', 'b.txt.encrypted'))
    const resumed = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...key.spec, '-S', '--skip-existing', '--summary', '-'])
    expect(JSON.parse(resumed.stdout.toString())).toMatchObject({ files_ok: 2 - 1, files_skipped: 1 })
    expect(readFileSync(join(dir, 'enc', 'a.txt.encrypted'), 'utf8')).toBe('already there')
    const refused = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...key.spec, '-S', '--no-overwrite'])
    expect(refused.code).toBe(0)
    expect(refused.stderr).toMatch(/a\.txt\.encrypted exists; skipped \(--no-overwrite\)/)
    expect(readFileSync(join(dir, 'enc', 'a.txt.encrypted'), 'utf8')).toBe('already there')
  })

  it('--interactive asks before replacing an existing output: n keeps it, y replaces it', async () => {
    const { dir, key, input } = setup({ 'a.txt': 'a' })
    mkdirSync(join(dir, 'enc'))
    writeFileSync(join(dir, 'enc', 'a.txt.encrypted'), 'keep?')
    const no = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...key.spec, '-S', '--interactive'], { input: 'n\n' })
    expect(no.stderr).toMatch(/overwrite .*a\.txt\.encrypted\? \[y\/N\]/)
    expect(readFileSync(join(dir, 'enc', 'a.txt.encrypted'), 'utf8')).toBe('keep?')
    const yes = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...key.spec, '-S', '--interactive'], { input: 'y\n' })
    expect(yes.code).toBe(0)
    expect(readFileSync(join(dir, 'enc', 'a.txt.encrypted'), 'utf8')).not.toBe('keep?')
  })

  it('@argfile: shlex lines, # comments, $VAR and ~ expanded', async () => {
    const { dir, key, input } = setup({ 'a.txt': 'argfile' })
    writeFileSync(join(dir, 'args'), [
      '# encrypt the input tree',
      `-e -r -i "${input}"  # a comment after arguments`,
      '-o $OUT_DIR/enc',
      // ~ is the HOME given below (the test's directory): the key file and the summary are found through it.
      `-w provider=raw-aes key=k1 material=file://~/${basename(key.path)}`,
      '-S --summary ~/summary.json',
    ].join('\n'))
    const result = await runCli([`@${join(dir, 'args')}`], { env: { OUT_DIR: dir, HOME: dir } })
    expect(result.code, result.stderr).toBe(0)
    expect(existsSync(join(dir, 'enc', 'a.txt.encrypted'))).toBe(true)
    expect(JSON.parse(readFileSync(join(dir, 'summary.json'), 'utf8')).files_ok).toBe(1)
    expect(existsSync(join(dir, '~'))).toBe(false)
  })

  it('-q prints nothing on success; -v lists each file', async () => {
    const { dir, key, input } = setup({ 'a.txt': 'a' })
    const quiet = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'q'), ...key.spec, '-S', '-q'])
    expect(quiet.stderr).toBe('')
    const verbose = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'v'), ...key.spec, '-S', '-v'])
    expect(verbose.stderr).toMatch(/ok: .*a\.txt -> .*a\.txt\.encrypted/)
  })

  it('-j 1 and -j 8 produce the same plaintexts', async () => {
    const files: Record<string, Buffer> = {}
    for (let i = 0; i < 20; i++) files[`f${i}.bin`] = randomBytes(i * 1000)
    const { dir, key, input } = setup(files)
    for (const jobs of ['1', '8']) {
      await runCli(['-e', '-r', '-i', input, '-o', join(dir, `e${jobs}`), ...key.spec, '-S', '-j', jobs])
      await runCli(['-d', '-r', '-i', join(dir, `e${jobs}`), '-o', join(dir, `d${jobs}`), ...key.spec, '-S', '-j', jobs])
      for (const name of Object.keys(files)) expect(readFileSync(join(dir, `d${jobs}`, `${name}.encrypted.decrypted`)).equals(files[name])).toBe(true)
    }
  })

  it('--fsync flushes every output (fsync calls counted with strace): none without it, one per output and more with it', async () => {
    const { dir, key, input } = setup({ 'a.txt': 'durable', 'b.txt': 'also', 'sub/c.txt': 'and this' })
    const fsyncCalls = async (args: string[]) => {
      const trace = join(dir, `strace-${randomBytes(4).toString('hex')}`)
      const result = await runStraced(trace, args)
      expect(result.status, result.stderr).toBe(0)
      return readFileSync(trace, 'utf8').split('\n').filter((line) => /\b(fsync|fdatasync)\(/.test(line)).length
    }
    expect(await fsyncCalls(['-e', '-r', '-i', input, '-o', join(dir, 'plain'), ...key.spec, '-S'])).toBe(0)
    // Each of the 3 outputs is flushed before its rename, and its directory after.
    expect(await fsyncCalls(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...key.spec, '-S', '--fsync'])).toBeGreaterThanOrEqual(3 + 2)
    expect(await fsyncCalls(['-d', '-r', '-i', join(dir, 'enc'), '-o', join(dir, 'dec'), '--suffix', ...key.spec, '-S', '--fsync'])).toBeGreaterThanOrEqual(3 + 2)
    expect(readFileSync(join(dir, 'dec', 'a.txt.encrypted'), 'utf8')).toBe('durable')
  })

  it('keygen writes a 32-byte key with mode 0600 and never replaces a file', async () => {
    const dir = tempDir()
    const path = join(dir, 'new.key')
    expect((await runCli(['keygen', '--out', path])).code).toBe(0)
    expect(readFileSync(path)).toHaveLength(32)
    expect(statSync(path).mode & 0o777).toBe(0o600)
    const before = readFileSync(path)
    const again = await runCli(['keygen', '--out', path])
    expect(again.code).toBe(2)
    expect(again.stderr).toMatch(/already exists/)
    expect(readFileSync(path).equals(before)).toBe(true)
  })

  it('--version and --help work', async () => {
    expect((await runCli(['--version'])).stdout.toString().trim()).toMatch(/^\d+\.\d+\.\d+$/)
    const help = await runCli(['--help'])
    expect(help.stdout.toString()).toMatch(/--wrapping-keys/)
    expect(help.stdout.toString()).toMatch(/Examples:/)
  })
})

describe('bad input: one-line error naming the flag or file, non-zero exit, nothing lost', () => {
  const cases: Array<[string, (ctx: ReturnType<typeof setup>) => string[], RegExp]> = [
    ['no mode', ({ input, dir, key }) => ['-i', input, '-o', join(dir, 'o'), ...key.spec, '-S'], /exactly one of -e/],
    ['two modes', ({ input, dir, key }) => ['-e', '-d', '-i', input, '-o', join(dir, 'o'), ...key.spec, '-S'], /exactly one of -e/],
    ['no wrapping key', ({ input, dir }) => ['-e', '-r', '-i', input, '-o', join(dir, 'o'), '-S'], /-w\/--wrapping-keys is required/],
    ['unknown spec field', ({ input, dir }) => ['-e', '-r', '-i', input, '-o', join(dir, 'o'), '-w', 'key=a', 'colour=red', '-S'], /unknown field "colour"/],
    ['key material on the command line', ({ input, dir }) => ['-e', '-r', '-i', input, '-o', join(dir, 'o'), '-w', 'provider=raw-aes', 'key=a', 'material=c2VjcmV0LWtleS1ieXRlcw==', '-S'], /material must be file:\/\/PATH/],
    ['missing key file', ({ input, dir }) => ['-e', '-r', '-i', input, '-o', join(dir, 'o'), '-w', 'provider=raw-aes', 'key=a', `material=file://${join(dir, 'absent.key')}`, '-S'], /cannot read key file .*absent\.key/],
    ['discovery on encrypt', ({ input, dir }) => ['-e', '-r', '-i', input, '-o', join(dir, 'o'), '-w', 'discovery=true', '-S'], /discovery=true cannot be used to encrypt/],
    ['account without partition', ({ input, dir }) => ['-d', '-r', '-i', input, '-o', join(dir, 'o'), '-w', 'discovery=true', 'discovery-account=111122223333', '-S'], /together/],
    ['output inside the input tree', ({ input, key }) => ['-e', '-r', '-i', input, '-o', join(input, 'enc'), ...key.spec, '-S'], /inside the input directory/],
    ['bad --caching', ({ input, dir, key }) => ['-e', '-r', '-i', input, '-o', join(dir, 'o'), ...key.spec, '-S', '--caching', 'capacity=1'], /--caching needs capacity=N and max_age/],
    ['bad -c', ({ input, dir, key }) => ['-e', '-r', '-i', input, '-o', join(dir, 'o'), ...key.spec, '-S', '-c', 'novalue'], /not key=value/],
    ['unknown flag', ({ input, dir, key }) => ['-e', '-r', '-i', input, '-o', join(dir, 'o'), ...key.spec, '-S', '--colour'], /Unknown argument/],
  ]
  for (const [name, makeArgs, message] of cases) {
    it(name, async () => {
      const ctx = setup({ 'a.txt': 'keep me' })
      const result = await runCli(makeArgs(ctx))
      expect(result.code).toBe(2)
      expect(result.stderr.trim().split('\n')).toHaveLength(1)
      expect(result.stderr).toMatch(message)
      expect(readFileSync(join(ctx.input, 'a.txt'), 'utf8')).toBe('keep me')
      expect(existsSync(join(ctx.dir, 'o'))).toBe(false)
    })
  }

  it('other commands name the bad flag or file too: local-kms --throttle-rate, merge-summaries, keygen --bytes', async () => {
    const dir = tempDir()
    const rate = await runCli(['local-kms', '--throttle-rate', '2'])
    expect(rate.code).toBe(2)
    expect(rate.stderr).toMatch(/--throttle-rate must be between 0 and 1/)
    writeFileSync(join(dir, 'not-a-summary.json'), '{"hello": 1}')
    const merge = await runCli(['merge-summaries', join(dir, 'not-a-summary.json')])
    expect(merge.code).toBe(2)
    expect(merge.stderr).toMatch(/not-a-summary\.json has no numeric "files_ok"/)
    const bytes = await runCli(['keygen', '--out', join(dir, 'k'), '--bytes', '20'])
    expect(bytes.code).toBe(2)
    expect(bytes.stderr).toMatch(/bytes/)
    expect(existsSync(join(dir, 'k'))).toBe(false)
  })

  it('never echoes key material given on the command line', async () => {
    const ctx = setup({ 'a.txt': 'a' })
    const result = await runCli(['-e', '-r', '-i', ctx.input, '-o', join(ctx.dir, 'o'), '-w', 'provider=raw-aes', 'key=a', 'material=c2VjcmV0LWtleS1ieXRlcw==', '-S'])
    expect(result.stderr).not.toContain('c2VjcmV0')
  })

  it('a raw AES key file of the wrong size is named', async () => {
    const ctx = setup({ 'a.txt': 'a' })
    writeFileSync(join(ctx.dir, 'short.key'), randomBytes(20), { mode: 0o600 })
    const result = await runCli(['-e', '-r', '-i', ctx.input, '-o', join(ctx.dir, 'o'), '-w', 'provider=raw-aes', 'key=a', `material=file://${join(ctx.dir, 'short.key')}`, '-S'])
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/short\.key holds 20 bytes/)
  })

  it('warns when a key file is readable by group or others', async () => {
    const ctx = setup({ 'a.txt': 'a' })
    chmodSync(ctx.key.path, 0o644)
    const result = await runCli(['-e', '-r', '-i', ctx.input, '-o', join(ctx.dir, 'o'), ...ctx.key.spec, '-S'])
    expect(result.code).toBe(0)
    expect(result.stderr).toMatch(/warning: key file .* readable by group or others; run: chmod 600/)
  })

  it('two inputs that map to the same output are refused before anything is written', async () => {
    const ctx = setup({ 'x/a.txt': '1', 'y/a.txt': '2' })
    const result = await runCli(['-e', '-i', join(ctx.input, 'x', 'a.txt'), join(ctx.input, 'y', 'a.txt'), '-o', join(ctx.dir, 'o'), ...ctx.key.spec, '-S'])
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/would both be written to/)
    expect(existsSync(join(ctx.dir, 'o'))).toBe(false)
  })

  it('the wrong raw key fails each file with a clear error and writes nothing', async () => {
    const ctx = setup({ 'a.txt': 'a' })
    await runCli(['-e', '-r', '-i', ctx.input, '-o', join(ctx.dir, 'enc'), ...ctx.key.spec, '-S'])
    const other = rawAesKey(ctx.dir, 'k1-other')
    const wrong = ['-w', 'provider=raw-aes', 'key=k1', `material=file://${other.path}`]
    const result = await runCli(['-d', '-r', '-i', join(ctx.dir, 'enc'), '-o', join(ctx.dir, 'dec'), ...wrong, '-S'])
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(/a\.txt\.encrypted: .*data key/)
    expect(existsSync(join(ctx.dir, 'dec', 'a.txt.encrypted.decrypted'))).toBe(false)
  })
})
