// Drop-in fidelity: scripts written for the official aws-encryption-cli behave the same under envcrypt (each
// case was checked side by side against aws-encryption-cli 4.3.0), and newcomers' mistakes get helpful errors.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { split as shellSplit } from 'shlex'
import { localKmsEnv, startLocalKms, type LocalKms } from '../src/local-kms/server.js'
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { generateKeyPairSync } from 'node:crypto'
import { join } from 'node:path'
import { listFiles, rawAesKey, readJsonLines, ROOT, runCli, tempDir, writeTree } from './helpers/cli.js'

function setup(files: Record<string, string> = { 'a.txt': 'alpha', 'sub/b.txt': 'beta', 's2/c.txt': 'gamma' }) {
  const dir = tempDir()
  const input = join(dir, 'data')
  writeTree(input, files)
  return { dir, input, key: rawAesKey(dir) }
}

// Each test runs the CLI several times; on a loaded 2-core machine one run can take several seconds.
const SLOW = { timeout: 300_000 }

describe('scripts written for the official CLI', SLOW, () => {
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

  it('a glob that matches directories: -r walks them (mirrored under the fixed base, each file once); without -r they are skipped with a warning, exit 0', async () => {
    const { dir, input, key } = setup()
    const walked = await runCli(['-e', '-r', '-i', join(input, 's*'), '-o', join(dir, 'enc'), ...key.spec, '-S'])
    expect(walked.code, walked.stderr).toBe(0)
    expect(listFiles(join(dir, 'enc'))).toEqual(['s2/c.txt.encrypted', 'sub/b.txt.encrypted'])
    const everything = await runCli(['-e', '-r', '-i', join(input, '**'), '-o', join(dir, 'all'), ...key.spec, '-S'])
    expect(everything.code, everything.stderr).toBe(0)
    expect(listFiles(join(dir, 'all'))).toEqual(['a.txt.encrypted', 's2/c.txt.encrypted', 'sub/b.txt.encrypted'])
    const flat = await runCli(['-e', '-i', join(input, 's*'), '-o', join(dir, 'flat'), ...key.spec, '-S'])
    expect(flat.code, flat.stderr).toBe(0)
    expect(flat.stderr).toContain(`warning: skipping directory ${join(input, 'sub')}: use -r`)
    expect(existsSync(join(dir, 'flat'))).toBe(false)
    const inside = await runCli(['-e', '-r', '-i', join(input, 's*'), '-o', join(input, 'sub', 'out'), ...key.spec, '-S'])
    expect(inside.code).toBe(2)
    expect(inside.stderr).toMatch(/inside the input directory/)
  })

  it('an unambiguous prefix of a long flag stands for it (--recurs, --meta FILE, --wrap=...), as argparse', async () => {
    const { dir, input, key } = setup()
    const [, ...spec] = key.spec
    const result = await runCli(['-e', '--recurs', '-i', input, '--out', join(dir, 'enc'), `--wrap=${spec[0]}`, ...spec.slice(1), '--meta', join(dir, 'm.json')])
    expect(result.code, result.stderr).toBe(0)
    expect(readFileSync(join(dir, 'm.json'), 'utf8').trim().split('\n')).toHaveLength(3)
    const reencrypted = await runCli(['reencrypt', '--recurs', '-i', join(dir, 'enc'), '-o', join(dir, 'rot'), '--from-wrap', ...spec, ...key.spec, '--suppress'])
    expect(reencrypted.code, reencrypted.stderr).toBe(0)
    expect(listFiles(join(dir, 'rot'))).toHaveLength(3)
  })

  it('an ambiguous prefix names its candidates; an unknown flag gets the closest one, with its dashes, in every command', async () => {
    const ambiguous = await runCli(['-e', '--en'])
    expect(ambiguous.code).toBe(2)
    expect(ambiguous.stderr).toMatch(/^envcrypt: error: ambiguous option: --en could match --encrypt, --encryption-context, --encode, --engine/)
    const typo = await runCli(['-e', '-i', 'x', '-o', 'y', '-S', '--sufix', '.enc'])
    expect(typo.code).toBe(2)
    expect(typo.stderr.trim()).toBe('envcrypt: error: Unknown argument: --sufix (did you mean --suffix?)')
    const far = await runCli(['-e', '--zzzzzz'])
    expect(far.stderr.trim()).toBe('envcrypt: error: Unknown argument: --zzzzzz (see envcrypt --help)')
    const inspect = await runCli(['inspect', 'x', '--jsn'])
    expect(inspect.stderr.trim()).toBe('envcrypt: error: Unknown argument: --jsn (did you mean --json?)')
    const keygen = await runCli(['keygen', '--out', 'x', '--bites', '16'])
    expect(keygen.stderr.trim()).toBe('envcrypt: error: Unknown argument: --bites (did you mean --bytes?)')
  })

  it('a missing input or a glob that matches nothing: one line naming it, exit 1 (as the official CLI), nothing written', async () => {
    const { dir, input, key } = setup()
    for (const missing of [join(dir, 'nope'), join(dir, 'nope*')]) {
      const result = await runCli(['-e', '-r', '-i', input, '-i', missing, '-o', join(dir, 'enc'), ...key.spec, '--metadata-output', join(dir, 'm.json')])
      expect(result.code).toBe(1)
      expect(result.stderr.trim().split('\n')).toEqual([expect.stringMatching(new RegExp(`^envcrypt: error: -i ${missing.replace('*', '\\*')}: (no such file or directory|the pattern matches no file or directory)$`))])
      expect(existsSync(join(dir, 'enc'))).toBe(false)
      expect(existsSync(join(dir, 'm.json'))).toBe(false)
    }
  })

  it('-i - with a directory as -o is refused, as the official CLI does; a file works', async () => {
    const { dir, key } = setup()
    mkdirSync(join(dir, 'out'))
    for (const output of [join(dir, 'out'), join(dir, 'new') + '/']) {
      const refused = await runCli(['-e', '-i', '-', '-o', output, ...key.spec, '-S'], { input: 'from stdin' })
      expect(refused.code).toBe(2)
      expect(refused.stderr).toContain(`-o ${output}: standard input (-i -) needs an output file, not a directory`)
    }
    expect(listFiles(join(dir, 'out'))).toEqual([])
    const ok = await runCli(['-e', '-i', '-', '-o', join(dir, 'out', 'x.enc'), ...key.spec, '-S'], { input: 'from stdin' })
    expect(ok.code, ok.stderr).toBe(0)
    expect(listFiles(join(dir, 'out'))).toEqual(['x.enc'])
  })

  it('a metadata file inside the output directory is refused up front; A/py.meta beside -o A/py is fine', async () => {
    const { dir, input, key } = setup()
    for (const meta of [join(dir, 'enc', 'meta.json'), join(dir, 'enc', 'deeper', 'meta.json')]) {
      const refused = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...key.spec, '--metadata-output', meta])
      expect(refused.code).toBe(2)
      expect(refused.stderr.trim()).toBe(`envcrypt: error: --metadata-output ${meta}: the metadata file is inside the output directory ${join(dir, 'enc')}; put it outside (see envcrypt --help)`)
      expect(existsSync(join(dir, 'enc'))).toBe(false)
    }
    const beside = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'py'), ...key.spec, '--metadata-output', join(dir, 'py.meta')])
    expect(beside.code, beside.stderr).toBe(0)
    expect(readFileSync(join(dir, 'py.meta'), 'utf8').trim().split('\n')).toHaveLength(3)
    const back = await runCli(['-d', '-r', '-i', join(dir, 'py'), '-o', join(dir, 'back'), ...key.spec, '-S'])
    expect(back.code, back.stderr).toBe(0)
  })
})

describe('the seed blog (AWS Security blog, aws-encryption-cli caching walkthrough), verbatim against the local KMS', SLOW, () => {
  let kms: LocalKms
  let keyArn: string
  beforeAll(async () => {
    kms = await startLocalKms()
    keyArn = await kms.createKey('fidelity.test')
  })
  afterAll(() => kms?.close())

  // The blog's two commands as published. Only its metadata files move from /tmp/X to the test's own
  // directory (DIR/tmp-X), so parallel runs cannot collide; every flag and value is as written.
  const ENCRYPT = 'aws-encryption-cli --encrypt --suffix --overwrite-metadata --metadata-output /tmp/encrypt --input ./data --recursive --master-key key=$cmkArn --output encrypt --caching capacity=1 max_age=10 max_messages_encrypted=100'
  const DECRYPT = 'aws-encryption-cli --decrypt --suffix --overwrite-metadata --metadata-output /tmp/decrypt --input ./encrypt --recursive --output decrypt --caching capacity=100 max_age=100'

  it('--master-key (1.x spelling, argparse prefix) encrypts with a hint; the keyless decrypt uses KMS discovery with a warning; every file round-trips', async () => {
    const dir = tempDir()
    const files: Record<string, string> = {}
    for (let i = 0; i < 5; i++) files[`f${i}.txt`] = `file ${i} `.repeat(100 * (i + 1))
    writeTree(join(dir, 'data'), files)
    const args = (command: string) => shellSplit(command.replace('$cmkArn', keyArn).replaceAll('/tmp/', `${dir}/tmp-`)).slice(1)
    kms.resetCounts()
    const enc = await runCli(args(ENCRYPT), { cwd: dir, env: localKmsEnv(kms) })
    expect(enc.code, enc.stderr).toBe(0)
    expect(enc.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^envcrypt: warning: -m\/--master-keys is the aws-encryption-cli 1\.x spelling of -w\/--wrapping-keys .*; use -w$/)])
    expect(listFiles(join(dir, 'encrypt'))).toEqual(Object.keys(files).sort())
    expect(kms.counts().GenerateDataKey).toBe(1)
    expect(readJsonLines(join(dir, 'tmp-encrypt'))).toHaveLength(5)

    kms.resetCounts()
    const dec = await runCli(args(DECRYPT), { cwd: dir, env: localKmsEnv(kms) })
    expect(dec.code, dec.stderr).toBe(0)
    expect(dec.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^envcrypt: warning: no -w key named: decrypting with KMS discovery .*restrict it with -w discovery=true discovery-account=ACCOUNT discovery-partition=aws/)])
    expect(kms.counts().Decrypt).toBe(1)
    for (const [name, content] of Object.entries(files)) expect(readFileSync(join(dir, 'decrypt', name), 'utf8')).toBe(content)
    expect(readJsonLines(join(dir, 'tmp-decrypt')).map((r) => r.mode)).toEqual(Array(5).fill('decrypt'))
  })
})

describe("newcomers' mistakes", SLOW, () => {
  it('a wrong key name or a missing namespace= on decrypt names the key the message was wrapped for, the keys given, and the namespace to use', async () => {
    const { dir, input, key } = setup({ 'a.txt': 'alpha' })
    const material = key.spec[3]!
    const enc = await runCli(['-e', '-i', join(input, 'a.txt'), '-o', join(dir, 'a.enc'), '-w', 'provider=raw-aes', 'key=k1', 'namespace=team-ns', material, '-S'])
    expect(enc.code, enc.stderr).toBe(0)
    const wrapped = 'the message was wrapped for provider team-ns, key k1 (raw AES, 16-byte tag, 12-byte IV)'
    const wrongName = await runCli(['-d', '-i', join(dir, 'a.enc'), '-o', join(dir, 'a.dec'), '-w', 'provider=raw-aes', 'key=k2', 'namespace=team-ns', material, '-S'])
    expect(wrongName.code).toBe(1)
    expect(wrongName.stderr).toContain(`${join(dir, 'a.enc')}: no wrapping key could decrypt the data key: ${wrapped}; given: raw-aes namespace=team-ns key=k2\n`)
    const noNamespace = await runCli(['-d', '-i', join(dir, 'a.enc'), '-o', join(dir, 'a.dec'), '-w', 'provider=raw-aes', 'key=k1', material, '-S', '--engine', 'sdk'])
    expect(noNamespace.code).toBe(1)
    expect(noNamespace.stderr).toContain(`: ${wrapped}; given: raw-aes namespace=envcrypt key=k1; only the namespace differs: use namespace=team-ns\n`)
    expect(noNamespace.stderr).not.toMatch(/unencryptedDataKey/)
    expect(existsSync(join(dir, 'a.dec'))).toBe(false)
  })

  it('material=/path without file:// suggests material=file:///path; a value that may be the key itself is never echoed', async () => {
    const { dir, input, key } = setup({ 'a.txt': 'alpha' })
    const run = (material: string) => runCli(['-e', '-i', join(input, 'a.txt'), '-o', join(dir, 'a.enc'), '-w', 'provider=raw-aes', 'key=k1', `material=${material}`, '-S'], { cwd: dir })
    const absolute = await run(key.path)
    expect(absolute.code).toBe(2)
    expect(absolute.stderr.trim()).toBe(`envcrypt: error: -w/--wrapping-keys: material=${key.path}: a key file is named as a URL; write material=file://${key.path} (see envcrypt --help)`)
    expect((await run('./k1.key')).stderr).toContain(`write material=file://${key.path} `)
    const secret = 'c2VjcmV0LWtleS1ieXRlcy0zMi1sb25nLWZvci10ZXN0cw=='
    for (const value of [secret, `/${secret}`]) {
      const refused = await run(value)
      expect(refused.code).toBe(2)
      expect(refused.stderr).toMatch(/material must be file:\/\/PATH/)
      expect(refused.stderr).not.toContain(secret)
    }
  })

  it('-e given inputs that already are messages (raw or --encode) warns once, naming how many', async () => {
    const { dir, input, key } = setup({ 'a.txt': 'alpha', 'b.txt': 'beta', 'c.txt': 'gamma' })
    expect((await runCli(['-e', '-i', join(input, 'a.txt'), '-o', join(input, 'a.enc'), ...key.spec, '-S'])).code).toBe(0)
    expect((await runCli(['-e', '-i', join(input, 'b.txt'), '-o', join(input, 'b.b64'), '--encode', ...key.spec, '-S'])).code).toBe(0)
    const again = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...key.spec, '-S'])
    expect(again.code, again.stderr).toBe(0)
    expect(again.stderr.trim().split('\n')).toEqual([`envcrypt: warning: 2 of 5 input(s) already look like Encryption SDK messages (${join(input, 'a.enc')}, ...); encrypting them again (use -d to decrypt)`])
    const plain = await runCli(['-e', '-i', join(input, 'c.txt'), '-o', join(dir, 'c.enc'), ...key.spec, '-S'])
    expect(plain.stderr).toBe('')
  })

  it('keygen --out ~/.envcrypt/key.bin on a fresh machine creates every missing parent, each mode 0700, the key 0600', async () => {
    const home = tempDir()
    writeFileSync(join(home, 'existing-marker'), '')
    // The shell expands ~ before envcrypt sees it.
    const result = await runCli(['keygen', '--out', join(home, '.envcrypt', 'deep', 'key.bin')])
    expect(result.code, result.stderr).toBe(0)
    expect(statSync(join(home, '.envcrypt')).mode & 0o777).toBe(0o700)
    expect(statSync(join(home, '.envcrypt', 'deep')).mode & 0o777).toBe(0o700)
    expect(statSync(join(home, '.envcrypt', 'deep', 'key.bin')).mode & 0o777).toBe(0o600)
    expect(statSync(home).mode & 0o777).toBe(0o700) // mkdtemp's own mode, left alone
    expect(readFileSync(join(home, '.envcrypt', 'deep', 'key.bin'))).toHaveLength(32)
  })

  it('--max-encrypted-data-keys 0 is a usage error; --decrypt-unsigned names the suite as the official CLI does, on every engine', async () => {
    const { dir, input, key } = setup({ 'a.txt': 'alpha' })
    for (const value of ['0', '1.5']) {
      const bad = await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...key.spec, '-S', '--max-encrypted-data-keys', value])
      expect(bad.code).toBe(2)
      expect(bad.stderr.trim()).toBe('envcrypt: error: --max-encrypted-data-keys must be a positive integer (see envcrypt --help)')
    }
    expect(existsSync(join(dir, 'enc'))).toBe(false)
    expect((await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'enc'), ...key.spec, '-S'])).code).toBe(0)
    for (const engine of ['pool', 'js', 'sdk']) {
      const signed = await runCli(['--decrypt-unsigned', '-r', '-i', join(dir, 'enc'), '-o', join(dir, `dec-${engine}`), ...key.spec, '-S', '--engine', engine])
      expect(signed.code).toBe(1)
      expect(signed.stderr).toContain('a.txt.encrypted: message is signed (algorithm suite AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384); --decrypt-unsigned accepts unsigned messages only\n')
      expect(signed.stderr).not.toMatch(/ALG_|AES256/)
    }
  })

  it('key files are judged by content: a public PEM may be world-readable but not writable; private PEMs, raw AES and SSE-C keys are secret', async () => {
    const { dir, input } = setup({ 'a.txt': 'alpha' })
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
    const pub = join(dir, 'pub.pem')
    const priv = join(dir, 'priv.pem')
    writeFileSync(pub, publicKey.export({ type: 'spki', format: 'pem' }))
    writeFileSync(priv, privateKey.export({ type: 'pkcs8', format: 'pem' }))
    const encrypt = (pem: string, out: string) => runCli(['-e', '-r', '-i', input, '-o', join(dir, out), '-w', 'provider=raw-rsa', 'key=r', `material=file://${pem}`, '-S'])
    chmodSync(pub, 0o644)
    const shared = await encrypt(pub, 'e1')
    expect(shared.code, shared.stderr).toBe(0)
    expect(shared.stderr).toBe('')
    chmodSync(pub, 0o666)
    expect((await encrypt(pub, 'e2')).stderr.trim()).toBe(`envcrypt: warning: public key file ${pub} is writable by group or others, so anyone could swap in their own key; run: chmod go-w ${pub}`)
    chmodSync(priv, 0o644)
    expect((await encrypt(priv, 'e3')).stderr.trim()).toBe(`envcrypt: warning: key file ${priv} is readable by group or others; run: chmod 600 ${priv}`)
    const sseKey = join(dir, 'sse.key')
    writeFileSync(sseKey, Buffer.alloc(32, 7), { mode: 0o640 })
    chmodSync(sseKey, 0o640)
    const aes = rawAesKey(dir)
    const s3 = await runCli(['-e', '-r', '-i', input, '-o', 's3://bucket/x/', '--s3-endpoint', 'http://127.0.0.1:9', '--sse-c-key', `fileb://${sseKey}`, ...aes.spec, '-S', '-n'])
    expect(s3.code, s3.stderr).toBe(0)
    expect(s3.stderr).toContain(`envcrypt: warning: key file ${sseKey} is readable by group or others; run: chmod 600 ${sseKey}\n`)
  })

  it('legacy PKCS#1 v1.5 RSA messages: one line saying why and the way out; --allow-pkcs1-decrypt re-runs under the security revert to move them to OAEP', async () => {
    const { dir, input } = setup({ 'a.txt': 'alpha', 'b.txt': 'beta' })
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
    const pem = join(dir, 'priv.pem')
    writeFileSync(pem, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 })
    const rsa = (padding: string) => ['provider=raw-rsa', 'key=r', `material=file://${pem}`, `padding=${padding}`]
    expect((await runCli(['-e', '-r', '-i', input, '-o', join(dir, 'legacy'), '-w', ...rsa('pkcs1'), '-S'])).code).toBe(0)
    const refused = await runCli(['-d', '-r', '-i', join(dir, 'legacy'), '-o', join(dir, 'dec'), '-w', ...rsa('pkcs1'), '-S'])
    expect(refused.code).toBe(1)
    expect(refused.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^envcrypt: error: padding=pkcs1: this Node\.js \(v[\d.]+\) refuses PKCS#1 v1\.5 RSA decryption \(CVE-2023-46809, the Marvin attack\), .*envcrypt reencrypt --allow-pkcs1-decrypt -W provider=raw-rsa \.\.\. padding=pkcs1 -w \.\.\. padding=oaep-sha256$/)])
    expect(existsSync(join(dir, 'dec'))).toBe(false)
    const moved = await runCli(['reencrypt', '--allow-pkcs1-decrypt', '-r', '-i', join(dir, 'legacy'), '-o', join(dir, 'oaep'), '-W', ...rsa('pkcs1'), '-w', ...rsa('oaep-sha256'), '-S'])
    expect(moved.code, moved.stderr).toBe(0)
    expect(moved.stderr).toContain('envcrypt: warning: --allow-pkcs1-decrypt: PKCS#1 v1.5 RSA decryption is re-enabled')
    const back = await runCli(['-d', '-r', '-i', join(dir, 'oaep'), '-o', join(dir, 'back'), '--suffix', '-w', ...rsa('oaep-sha256'), '-S'])
    expect(back.code, back.stderr).toBe(0)
    expect(readFileSync(join(dir, 'back', 'a.txt.encrypted'), 'utf8')).toBe('alpha') // names kept through reencrypt and --suffix
    expect(readFileSync(join(dir, 'back', 'b.txt.encrypted'), 'utf8')).toBe('beta')
  })
})

describe('help agrees with behaviour', SLOW, () => {
  it('reencrypt, completion, migrate, inspect and merge-summaries help and usage errors say the right thing', async () => {
    const reencrypt = (await runCli(['reencrypt', '--help'])).stdout.toString()
    expect(reencrypt).toMatch(/--suffix\s+appended to output names \(default: none, names are kept\)/)
    expect(reencrypt).not.toMatch(/default \.encrypted/)
    const completion = await runCli(['completion', '--help'])
    expect(completion.code).toBe(0)
    expect(completion.stdout.toString()).toMatch(/^envcrypt completion\n\nprint a bash\/zsh completion script/)
    expect(completion.stdout.toString()).not.toContain('###-begin')
    const merge = await runCli(['merge-summaries'])
    expect(merge.code).toBe(2)
    expect(merge.stderr).toMatch(/\(see envcrypt merge-summaries --help\)\n$/)
    const migrate = (await runCli(['migrate', '--help'])).stdout.toString().split('\n')
    expect(migrate[2]).toMatch(/^re-encrypt files from a home-made KMS envelope scheme/)
    const inspect = (await runCli(['inspect', '--help'])).stdout.toString()
    expect(inspect).toMatch(/files\s+encrypted files \(- for stdin\)\s+\[array\] \[required\]\n/)
    expect(inspect).not.toContain('[default: []]')
  })

  it('the README lists every subcommand, has "On a terminal" in its contents before Development, and never says "anchor"', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
    const other = readme.split('\n').findIndex((line) => line.startsWith('Other commands'))
    const otherText = readme.split('\n').slice(other, other + 2).join(' ')
    for (const command of ['keygen', 'local-kms', 'bench', 'report', 'inspect', 'reencrypt', 'migrate', 'merge-summaries', 'completion']) expect(otherText).toContain(`\`${command}`)
    expect(readme).toContain('(#on-a-terminal-progress-summary-dry-runs-completion)')
    expect(readme.indexOf('## On a terminal')).toBeLessThan(readme.indexOf('## Development'))
    expect(readme).not.toMatch(/anchor/i)
  })
})
