// `envcrypt migrate` end to end: legacy fixtures are written here following each scheme's layout (data keys
// from the local KMS endpoint through the real AWS SDK, Node's crypto for cloudonaut-v1 and ddb-ctr, the real
// `openssl` command for openssl-kms), migrated with the real CLI, then decrypted back with `envcrypt -d`.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { execFileSync } from 'node:child_process'
import { createCipheriv, createDecipheriv, generateKeyPairSync, pbkdf2Sync, randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, readdirSync, watch, writeFileSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { GenerateDataKeyCommand, KMS, KMSClient } from '@aws-sdk/client-kms'
import { buildClient, CommitmentPolicy, KmsKeyringNode } from '@aws-crypto/client-node'
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3'
import { localKmsEnv, startLocalKms, type LocalKms } from '../src/local-kms/server.js'
import { listFiles, readJsonLines, runCli, tempDir } from './helpers/cli.js'
import { startS3rver, S3RVER_ENV } from './helpers/s3rver.js'

const SIZES = [0, 1, 15, 16, 17, 1024 * 1024 + 3]

let kms: LocalKms
let legacyKeyArn: string
let newKeyArn: string
let kmsClient: KMSClient
let sdkKmsClient: KMS
let env: Record<string, string>

beforeAll(async () => {
  kms = await startLocalKms()
  legacyKeyArn = await kms.createKey('legacy scripts')
  newKeyArn = await kms.createKey('envcrypt')
  env = localKmsEnv(kms)
  kmsClient = new KMSClient({ endpoint: kms.endpoint, region: 'us-east-1', credentials: { accessKeyId: 'AKIDLOCALTEST', secretAccessKey: 'local-test-secret' } })
  sdkKmsClient = new KMS({ endpoint: kms.endpoint, region: 'us-east-1', credentials: { accessKeyId: 'AKIDLOCALTEST', secretAccessKey: 'local-test-secret' } })
})
afterAll(async () => {
  kmsClient?.destroy()
  sdkKmsClient?.destroy()
  await kms?.close()
})

interface DataKey {
  plaintext: Buffer
  blob: Buffer
}

async function generateDataKey(keyArn = legacyKeyArn): Promise<DataKey> {
  const answer = await kmsClient.send(new GenerateDataKeyCommand({ KeyId: keyArn, KeySpec: 'AES_256' }))
  return { plaintext: Buffer.from(answer.Plaintext!), blob: Buffer.from(answer.CiphertextBlob!) }
}

// ---------- the three legacy writers ----------

function cloudonautV1(plaintext: Buffer, key: DataKey, options: { unpaddedBody?: boolean } = {}): Buffer {
  const header = Buffer.alloc(8)
  header[0] = 1
  header.writeUInt32LE(key.blob.length, 4)
  const ivBytes = randomBytes(8)
  const cipher = createCipheriv('aes-256-cbc', key.plaintext, Buffer.from(ivBytes.toString('hex'), 'ascii'))
  if (options.unpaddedBody) cipher.setAutoPadding(false)
  return Buffer.concat([header, key.blob, ivBytes, cipher.update(plaintext), cipher.final()])
}

function ddbCtr(plaintext: Buffer, key: DataKey): Buffer {
  const cipher = createCipheriv('aes-256-ctr', key.plaintext, Buffer.alloc(16))
  return Buffer.concat([cipher.update(plaintext), cipher.final()])
}

/** The walkthrough's command; plaintext goes in on stdin so that no plaintext file exists in the work dirs. */
function opensslKms(plaintext: Buffer, key: DataKey, outPath: string): void {
  mkdirSync(dirname(outPath), { recursive: true })
  execFileSync('openssl', ['enc', '-aes-256-cbc', '-pbkdf2', '-salt', '-out', outPath, '-pass', `pass:${key.plaintext.toString('base64')}`], { input: plaintext })
}

function opensslPaddingValidUnder(file: Buffer, key: DataKey): boolean {
  const derived = pbkdf2Sync(key.plaintext.toString('base64'), file.subarray(8, 16), 10_000, 48, 'sha256')
  const decipher = createDecipheriv('aes-256-cbc', derived.subarray(0, 32), derived.subarray(32))
  decipher.update(file.subarray(16))
  try {
    decipher.final()
    return true
  } catch {
    return false
  }
}

function ddbScanExport(entries: Array<[string, DataKey]>): string {
  return JSON.stringify({
    Items: entries.map(([fileName, key]) => ({ fileName: { S: fileName }, encryptedDataKey: { B: key.blob.toString('base64') }, createdAt: { N: '1700000000' } })),
    Count: entries.length,
    ScannedCount: entries.length,
  }, null, 2)
}

function put(path: string, bytes: Buffer | string): void {
  mkdirSync(dirname(path), { recursive: true })
  writeFileSync(path, bytes)
}

function originals(): Map<string, Buffer> {
  const files = new Map<string, Buffer>()
  for (const size of SIZES) files.set(size === SIZES[SIZES.length - 1] ? `nested/deeper/f-${size}.bin` : `f-${size}.bin`, randomBytes(size))
  return files
}

const MIN_SPILL_LENGTH = 8

/** Any file under `root` that holds a whole plaintext (of 8 bytes or more), or starts with the first 64 bytes of a large one. */
function plaintextSpills(root: string, plain: Map<string, Buffer>): string[] {
  return plaintextSpillsIn(root, readdirSync(root, { recursive: true }).map(String), plain)
}

/** Which of `rels` (paths under `root`) hold plaintext; a path that is gone or is a directory is skipped. */
function plaintextSpillsIn(root: string, rels: string[], plain: Map<string, Buffer>): string[] {
  const found: string[] = []
  for (const rel of rels) {
    let bytes: Buffer
    try {
      bytes = readFileSync(join(root, rel))
    } catch {
      continue // a directory, or a temporary renamed or removed meanwhile
    }
    for (const original of plain.values()) {
      // Very short plaintexts can equal a legacy ciphertext by chance (1 in 256 for a 1-byte CTR file).
      if (original.length < MIN_SPILL_LENGTH) continue
      if (bytes.equals(original) || (original.length >= 64 && bytes.length >= 64 && bytes.subarray(0, 64).equals(original.subarray(0, 64)))) found.push(rel)
    }
  }
  return found
}

/** Runs the CLI while watching `roots` (fs.watch, recursive): every file created or written under them is read
 *  as soon as its event arrives, so short-lived temporaries are seen too; then a last full scan. Returns the files
 *  that held plaintext, and how many events the watcher saw under the output root (it must see the outputs). */
async function runWatched(args: string[], roots: string[], plain: Map<string, Buffer>) {
  const spills = new Set<string>()
  const base = dirname(roots[0])
  expect(roots.every((root) => dirname(root) === base), 'the watched roots share one parent').toBe(true)
  let outputEvents = 0
  const watcher = watch(base, { recursive: true }, (_event, name) => {
    if (!name) return
    const root = roots.find((r) => String(name).startsWith(`${relative(base, r)}/`))
    if (!root) return
    if (root === roots[roots.length - 1]) outputEvents++
    const rel = relative(root, join(base, String(name)))
    for (const spill of plaintextSpillsIn(root, [rel], plain)) spills.add(spill)
  })
  try {
    const result = await runCli(args, { env })
    for (const root of roots) if (existsSync(root)) for (const spill of plaintextSpills(root, plain)) spills.add(spill)
    return { result, spills: [...spills], outputEvents }
  } finally {
    watcher.close()
  }
}

async function decryptAndCompare(dir: string, plain: Map<string, Buffer>, scheme: string) {
  const restored = join(dir, 'restored')
  const dec = await runCli(['-d', '-r', '-i', join(dir, 'migrated'), '-o', restored, '--suffix', '-w', `key=${newKeyArn}`, '-c', `envcrypt:migrated-from=${scheme}`, 'team=data', '-S'], { env })
  expect(dec.stderr).not.toMatch(/error/)
  expect(dec.code).toBe(0)
  for (const [rel, original] of plain) expect(readFileSync(join(restored, `${rel}.encrypted`)).equals(original)).toBe(true)
  // An independent reader: the Encryption SDK itself, with its own KMS keyring, opens every migrated message.
  const keyring = new KmsKeyringNode({ clientProvider: () => sdkKmsClient, keyIds: [newKeyArn] })
  for (const [rel, original] of plain) {
    const { plaintext, messageHeader } = await buildClient(CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT).decrypt(keyring, readFileSync(join(dir, 'migrated', `${rel}.encrypted`)))
    expect(Buffer.from(plaintext).equals(original)).toBe(true)
    expect(messageHeader.encryptionContext['envcrypt:migrated-from']).toBe(scheme)
  }
}

function checkMetadata(metaPath: string, scheme: string, count: number) {
  const records = readJsonLines(metaPath)
  expect(records).toHaveLength(count)
  for (const record of records) {
    expect(record.mode).toBe('encrypt')
    expect(record.header.encryption_context).toMatchObject({ 'envcrypt:migrated-from': scheme, team: 'data' })
  }
}

const migrateArgs = (dir: string, scheme: string, ...extra: string[]) => [
  'migrate', '--from', scheme, '-r', '-i', join(dir, 'legacy'), '-o', join(dir, 'migrated'), '-w', `key=${newKeyArn}`, '-c', 'team=data', ...extra,
]

describe('round trips: migrate, then envcrypt -d gives the original bytes', () => {
  it('cloudonaut-v1 (sizes 0, 1, 15, 16, 17, 1 MiB+3), one data key per file', async () => {
    const dir = tempDir()
    const plain = originals()
    for (const [rel, bytes] of plain) put(join(dir, 'legacy', rel), cloudonautV1(bytes, await generateDataKey()))
    const meta = join(dir, 'meta.jsonl')
    const summaryPath = join(dir, 'summary.json')
    const { result, spills, outputEvents } = await runWatched(migrateArgs(dir, 'cloudonaut-v1', '--metadata-output', meta, '--summary', summaryPath, '-j', '3'), [join(dir, 'legacy'), join(dir, 'migrated')], plain)
    expect(result.stderr).not.toMatch(/error/)
    expect(result.code).toBe(0)
    expect(spills).toEqual([])
    expect(outputEvents, 'the watcher saw the outputs being written').toBeGreaterThan(0)
    expect(listFiles(join(dir, 'migrated'))).toEqual([...plain.keys()].map((rel) => `${rel}.encrypted`).sort())
    checkMetadata(meta, 'cloudonaut-v1', plain.size)
    const summary = JSON.parse(readFileSync(summaryPath, 'utf8'))
    expect(summary).toMatchObject({ files_ok: plain.size, files_failed: 0 })
    expect(summary.kms_calls).toEqual({ Decrypt: plain.size, GenerateDataKey: plain.size })
    // Sources stay unless --delete-source.
    expect(listFiles(join(dir, 'legacy'))).toHaveLength(plain.size)
    await decryptAndCompare(dir, plain, 'cloudonaut-v1')
    // The spill detector does see plaintext where there is some.
    expect(plaintextSpills(join(dir, 'restored'), plain)).toHaveLength([...plain.values()].filter((p) => p.length >= MIN_SPILL_LENGTH).length)
  })

  it('openssl-kms with one --data-key-file (base64 text, as the AWS CLI prints it): one KMS Decrypt for the whole set', async () => {
    const dir = tempDir()
    const plain = originals()
    const key = await generateDataKey()
    for (const [rel, bytes] of plain) opensslKms(bytes, key, join(dir, 'legacy', rel))
    put(join(dir, 'data_key.b64'), key.blob.toString('base64') + '\n')
    const meta = join(dir, 'meta.jsonl')
    const { result, spills, outputEvents } = await runWatched(
      migrateArgs(dir, 'openssl-kms', '--data-key-file', join(dir, 'data_key.b64'), '--metadata-output', meta, '--summary', '-'),
      [join(dir, 'legacy'), join(dir, 'migrated')],
      plain,
    )
    expect(result.stderr).not.toMatch(/error/)
    expect(result.code).toBe(0)
    expect(spills).toEqual([])
    expect(outputEvents, 'the watcher saw the outputs being written').toBeGreaterThan(0)
    expect(JSON.parse(result.stdout.toString()).kms_calls).toEqual({ Decrypt: 1, GenerateDataKey: plain.size })
    checkMetadata(meta, 'openssl-kms', plain.size)
    await decryptAndCompare(dir, plain, 'openssl-kms')
  })

  it('openssl-kms with the per-file rule: FILE.key (raw blob) beside each FILE, and the .key files are not migrated', async () => {
    const dir = tempDir()
    const plain = originals()
    for (const [rel, bytes] of plain) {
      const key = await generateDataKey()
      opensslKms(bytes, key, join(dir, 'legacy', rel))
      put(join(dir, 'legacy', `${rel}.key`), key.blob)
    }
    const { result, spills, outputEvents } = await runWatched(migrateArgs(dir, 'openssl-kms', '-S'), [join(dir, 'legacy'), join(dir, 'migrated')], plain)
    expect(result.stderr).not.toMatch(/error/)
    expect(result.code).toBe(0)
    expect(spills).toEqual([])
    expect(outputEvents, 'the watcher saw the outputs being written').toBeGreaterThan(0)
    expect(listFiles(join(dir, 'migrated'))).toEqual([...plain.keys()].map((rel) => `${rel}.encrypted`).sort())
    await decryptAndCompare(dir, plain, 'openssl-kms')
  })

  it('openssl-kms: the PBKDF2 derivation matches `openssl enc -pbkdf2` (10,000 iterations of HMAC-SHA256 by default)', () => {
    const salt = randomBytes(8)
    const out = execFileSync('openssl', ['enc', '-aes-256-cbc', '-pbkdf2', '-S', salt.toString('hex'), '-pass', 'pass:c2VjcmV0', '-P'], { input: '' }).toString()
    const derived = pbkdf2Sync('c2VjcmV0', salt, 10_000, 48, 'sha256')
    expect(out).toContain(`key=${derived.subarray(0, 32).toString('hex').toUpperCase()}`)
    expect(out).toContain(`iv =${derived.subarray(32).toString('hex').toUpperCase()}`)
  })

  it('ddb-ctr with a DynamoDB JSON scan export; entries found by relative path or base name', async () => {
    const dir = tempDir()
    const plain = originals()
    const entries: Array<[string, DataKey]> = []
    for (const [rel, bytes] of plain) {
      const key = await generateDataKey()
      put(join(dir, 'legacy', rel), ddbCtr(bytes, key))
      // The nested file is indexed by its base name, the others by their relative path.
      entries.push([rel.includes('/') ? rel.split('/').pop()! : rel, key])
    }
    put(join(dir, 'scan.json'), ddbScanExport(entries))
    const meta = join(dir, 'meta.jsonl')
    const { result, spills, outputEvents } = await runWatched(migrateArgs(dir, 'ddb-ctr', '--key-index', join(dir, 'scan.json'), '--metadata-output', meta), [join(dir, 'legacy'), join(dir, 'migrated')], plain)
    expect(result.stderr).not.toMatch(/error/)
    expect(result.code).toBe(0)
    expect(spills).toEqual([])
    expect(outputEvents, 'the watcher saw the outputs being written').toBeGreaterThan(0)
    checkMetadata(meta, 'ddb-ctr', plain.size)
    await decryptAndCompare(dir, plain, 'ddb-ctr')
  })

  it('--skip-existing leaves already migrated outputs alone', async () => {
    const dir = tempDir()
    const key = await generateDataKey()
    put(join(dir, 'legacy', 'a.bin'), cloudonautV1(Buffer.from('alpha'), key))
    put(join(dir, 'legacy', 'b.bin'), cloudonautV1(Buffer.from('beta'), key))
    expect((await runCli(migrateArgs(dir, 'cloudonaut-v1', '-S'), { env })).code).toBe(0)
    const again = await runCli(migrateArgs(dir, 'cloudonaut-v1', '-S', '--skip-existing', '--summary', '-'), { env })
    expect(again.code).toBe(0)
    expect(JSON.parse(again.stdout.toString())).toMatchObject({ files_ok: 0, files_skipped: 2 })
  })
})

describe('migrate flags', () => {
  it('--data-key-suffix names the blob beside each file; --legacy-region reaches the legacy key without AWS_REGION', async () => {
    const dir = tempDir()
    const plain = new Map([['a.bin', randomBytes(100)], ['sub/b.bin', randomBytes(5000)], ['c.bin', randomBytes(20)]])
    for (const [rel, bytes] of plain) {
      const key = await generateDataKey()
      opensslKms(bytes, key, join(dir, 'legacy', rel))
      put(join(dir, 'legacy', `${rel}.dk`), key.blob)
    }
    const noRegion = { ...env, AWS_REGION: undefined, AWS_DEFAULT_REGION: undefined, AWS_CONFIG_FILE: join(dir, 'none') } as Record<string, string>
    const args = migrateArgs(dir, 'openssl-kms', '--data-key-suffix', '.dk', '-S')
    const refused = await runCli(args, { env: noRegion })
    expect(refused.code).not.toBe(0)
    expect(refused.stderr).toMatch(/[Rr]egion/)
    kms.resetCounts()
    const result = await runCli([...args, '--legacy-region', 'us-east-1'], { env: noRegion })
    expect(result.stderr).not.toMatch(/error/)
    expect(result.code).toBe(0)
    // Counted at the endpoint: one legacy Decrypt per file (each has its own .dk blob), one new data key each.
    expect(kms.counts()).toEqual({ Decrypt: plain.size, GenerateDataKey: plain.size })
    // The .dk blobs are keys, not data: they are not migrated.
    expect(listFiles(join(dir, 'migrated'))).toEqual([...plain.keys()].map((rel) => `${rel}.encrypted`).sort())
    await decryptAndCompare(dir, plain, 'openssl-kms')
  })

  it('--caching shares new data keys where the plaintext size is known ahead (ddb-ctr): one GenerateDataKey for 3 files', async () => {
    const dir = tempDir()
    const key = await generateDataKey()
    const plain = new Map([['a.csv', randomBytes(100)], ['b.csv', randomBytes(5000)], ['c.csv', randomBytes(20)]])
    for (const [rel, bytes] of plain) put(join(dir, 'legacy', rel), ddbCtr(bytes, key))
    put(join(dir, 'scan.json'), ddbScanExport([...plain.keys()].map((rel) => [rel, key])))
    const counts: Record<string, unknown> = {}
    for (const [name, flags] of [['plain', []], ['cached', ['--caching', 'capacity=1', 'max_age=60']]] as const) {
      kms.resetCounts()
      const result = await runCli(migrateArgs(dir, 'ddb-ctr', '--key-index', join(dir, 'scan.json'), '-S', ...flags).map((a) => (a === join(dir, 'migrated') ? join(dir, `migrated-${name}`) : a)), { env })
      expect(result.code, result.stderr).toBe(0)
      counts[name] = kms.counts().GenerateDataKey
    }
    expect(counts).toEqual({ plain: plain.size, cached: 1 })
  })
})

describe('per-file errors: one line naming the file and the cause, nothing written for it, the others go on', () => {
  function expectOnlyOutputs(dir: string, names: string[]) {
    expect(listFiles(join(dir, 'migrated'))).toEqual(names.map((n) => `${n}.encrypted`).sort())
  }
  function errorLine(stderr: string, file: string): string {
    const lines = stderr.split('\n').filter((line) => line.startsWith('envcrypt: error: ') && line.includes(file))
    expect(lines).toHaveLength(1)
    return lines[0]
  }

  it('cloudonaut-v1: wrong scheme, bad header, bad padding, truncated body, KMS refusal', async () => {
    const dir = tempDir()
    const key = await generateDataKey()
    const refusedKeyArn = await kms.createKey('disabled before migration')
    const refusedKey = await generateDataKey(refusedKeyArn)
    kms.setKeyEnabled(refusedKeyArn, false)
    const good = randomBytes(5000)
    put(join(dir, 'legacy', 'good.bin'), cloudonautV1(good, key))
    const wrongVersion = cloudonautV1(randomBytes(100), key)
    wrongVersion[0] = 2
    put(join(dir, 'legacy', 'wrong-version.bin'), wrongVersion)
    const reserved = cloudonautV1(randomBytes(100), key)
    reserved[2] = 7
    put(join(dir, 'legacy', 'reserved.bin'), reserved)
    put(join(dir, 'legacy', 'openssl-file.bin'), Buffer.concat([Buffer.from('Salted__'), randomBytes(8 + 32)]))
    // A last plaintext byte of 0 is never valid PKCS#7 padding.
    put(join(dir, 'legacy', 'bad-padding.bin'), cloudonautV1(Buffer.concat([randomBytes(31), Buffer.from([0])]), key, { unpaddedBody: true }))
    put(join(dir, 'legacy', 'truncated.bin'), cloudonautV1(randomBytes(100), key).subarray(0, -5))
    put(join(dir, 'legacy', 'kms-refused.bin'), cloudonautV1(randomBytes(100), refusedKey))
    const meta = join(dir, 'meta.jsonl')
    const result = await runCli(migrateArgs(dir, 'cloudonaut-v1', '--metadata-output', meta, '--summary', '-', '-j', '2'), { env })
    expect(result.code).toBe(1)
    expect(JSON.parse(result.stdout.toString())).toMatchObject({ files_ok: 1, files_failed: 6 })
    expect(errorLine(result.stderr, 'wrong-version.bin')).toMatch(/not in the cloudonaut-v1 format: version byte is 0x02/)
    expect(errorLine(result.stderr, 'reserved.bin')).toMatch(/not in the cloudonaut-v1 format: reserved header bytes/)
    expect(errorLine(result.stderr, 'openssl-file.bin')).toMatch(/not in the cloudonaut-v1 format/)
    expect(errorLine(result.stderr, 'bad-padding.bin')).toMatch(/bad padding/)
    expect(errorLine(result.stderr, 'truncated.bin')).toMatch(/not a whole number of 16-byte AES blocks/)
    expect(errorLine(result.stderr, 'kms-refused.bin')).toMatch(/KMS could not decrypt the data key \(.*DisabledException/)
    expectOnlyOutputs(dir, ['good.bin'])
    expect(readdirSync(join(dir, 'migrated')).filter((n) => n.startsWith('.envcrypt-tmp-'))).toEqual([])
    expect(readJsonLines(meta).map((r) => r.input.split('/').pop())).toEqual(['good.bin'])
    await decryptAndCompare(dir, new Map([['good.bin', good]]), 'cloudonaut-v1')
  })

  it('openssl-kms: missing Salted__, missing per-file key, bad padding (a wrong data key)', async () => {
    const dir = tempDir()
    const key = await generateDataKey()
    const otherKey = await generateDataKey()
    const good = randomBytes(300)
    opensslKms(good, key, join(dir, 'legacy', 'good.txt'))
    put(join(dir, 'legacy', 'good.txt.key'), key.blob)
    put(join(dir, 'legacy', 'not-salted.txt'), cloudonautV1(randomBytes(64), key))
    put(join(dir, 'legacy', 'not-salted.txt.key'), key.blob)
    opensslKms(randomBytes(64), key, join(dir, 'legacy', 'no-key.txt'))
    // Under a wrong data key the padding check fails for ~255 in 256 files: write until this one does.
    const wrongKeyPath = join(dir, 'legacy', 'wrong-key.txt')
    do opensslKms(randomBytes(64), otherKey, wrongKeyPath)
    while (opensslPaddingValidUnder(readFileSync(wrongKeyPath), key))
    put(join(dir, 'legacy', 'wrong-key.txt.key'), key.blob)
    const result = await runCli(migrateArgs(dir, 'openssl-kms', '-S'), { env })
    expect(result.code).toBe(1)
    expect(errorLine(result.stderr, 'not-salted.txt')).toMatch(/not in the openssl-kms format: it does not start with "Salted__"/)
    expect(errorLine(result.stderr, 'no-key.txt')).toMatch(/no data key file .*no-key\.txt\.key/)
    expect(errorLine(result.stderr, 'wrong-key.txt')).toMatch(/bad padding/)
    expectOnlyOutputs(dir, ['good.txt'])
    await decryptAndCompare(dir, new Map([['good.txt', good]]), 'openssl-kms')
  })

  it('ddb-ctr: a file without a key index entry fails alone', async () => {
    const dir = tempDir()
    const key = await generateDataKey()
    const good = randomBytes(1000)
    put(join(dir, 'legacy', 'good.csv'), ddbCtr(good, key))
    put(join(dir, 'legacy', 'unknown.csv'), ddbCtr(randomBytes(10), key))
    put(join(dir, 'scan.json'), ddbScanExport([['good.csv', key]]))
    const result = await runCli(migrateArgs(dir, 'ddb-ctr', '--key-index', join(dir, 'scan.json'), '-S'), { env })
    expect(result.code).toBe(1)
    expect(errorLine(result.stderr, 'unknown.csv')).toMatch(/no entry for "unknown\.csv" in key index/)
    expectOnlyOutputs(dir, ['good.csv'])
    await decryptAndCompare(dir, new Map([['good.csv', good]]), 'ddb-ctr')
  })

  it('refuses scheme flags that do not apply, and setting envcrypt:migrated-from by hand', async () => {
    const dir = tempDir()
    put(join(dir, 'legacy', 'a.bin'), 'x')
    const cases: Array<[string[], RegExp]> = [
      [migrateArgs(dir, 'ddb-ctr', '-S'), /--key-index/],
      [migrateArgs(dir, 'cloudonaut-v1', '-S', '--key-index', 'x.json'), /--key-index applies to --from ddb-ctr only/],
      [migrateArgs(dir, 'cloudonaut-v1', '-S', '--data-key-file', 'k'), /apply to --from openssl-kms only/],
      [migrateArgs(dir, 'openssl-kms', '-S', '--data-key-file', join(dir, 'missing')), /--data-key-file .*cannot read/],
      [[...migrateArgs(dir, 'cloudonaut-v1', '-S'), '-c', 'envcrypt:migrated-from=x'], /set by migrate itself/],
      [['migrate', '--from', 'rot13', '-i', dir, '-o', dir, '-S'], /--from|choices/i],
    ]
    for (const [args, pattern] of cases) {
      const result = await runCli(args, { env })
      expect(result.code, args.join(' ')).toBe(2)
      expect(result.stderr).toMatch(pattern)
    }
    expect(existsSync(join(dir, 'migrated'))).toBe(false)
  })
})

describe('--delete-source', () => {
  it('removes each source only after its message was written and decrypted back; failures keep theirs', async () => {
    const dir = tempDir()
    const key = await generateDataKey()
    const plain = originals()
    for (const [rel, bytes] of plain) put(join(dir, 'legacy', rel), cloudonautV1(bytes, key))
    put(join(dir, 'legacy', 'bad-padding.bin'), cloudonautV1(Buffer.concat([randomBytes(15), Buffer.from([0])]), key, { unpaddedBody: true }))
    const result = await runCli(migrateArgs(dir, 'cloudonaut-v1', '-S', '--delete-source', '--summary', '-'), { env })
    expect(result.code).toBe(1)
    expect(JSON.parse(result.stdout.toString())).toMatchObject({ files_ok: plain.size, files_failed: 1 })
    expect(listFiles(join(dir, 'legacy'))).toEqual(['bad-padding.bin'])
    await decryptAndCompare(dir, plain, 'cloudonaut-v1')
  })

  it('keeps the source when the written message cannot be decrypted back (a public-only RSA wrapping key)', async () => {
    const dir = tempDir()
    const key = await generateDataKey()
    put(join(dir, 'legacy', 'a.bin'), cloudonautV1(randomBytes(100), key))
    const { publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
    put(join(dir, 'public.pem'), publicKey.export({ type: 'spki', format: 'pem' }))
    const result = await runCli(
      ['migrate', '--from', 'cloudonaut-v1', '-r', '-i', join(dir, 'legacy'), '-o', join(dir, 'migrated'), '-w', 'provider=raw-rsa', 'key=r1', `material=file://${join(dir, 'public.pem')}`, '-S', '--delete-source'],
      { env },
    )
    expect(result.code).toBe(1)
    expect(errorLine(result.stderr, 'a.bin')).toMatch(/decrypting it back failed, so the source was kept/)
    expect(existsSync(join(dir, 'legacy', 'a.bin'))).toBe(true)
  })

  function errorLine(stderr: string, file: string): string {
    const lines = stderr.split('\n').filter((line) => line.startsWith('envcrypt: error: ') && line.includes(file))
    expect(lines).toHaveLength(1)
    return lines[0]
  }
})

describe('S3 inputs', () => {
  it('openssl-kms from s3://: each object\'s data key is the object KEY.key beside it; round trip to local files', async () => {
    const server = await startS3rver(['legacy-bucket'])
    const s3 = new S3Client({ endpoint: server.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } })
    try {
      const dir = tempDir()
      const plain = new Map([['a.txt', randomBytes(40)], ['sub/b.bin', randomBytes(70_000)]])
      for (const [rel, bytes] of plain) {
        const key = await generateDataKey()
        const local = join(dir, 'staging', rel)
        opensslKms(bytes, key, local)
        await s3.send(new PutObjectCommand({ Bucket: 'legacy-bucket', Key: `old/${rel}`, Body: readFileSync(local) }))
        await s3.send(new PutObjectCommand({ Bucket: 'legacy-bucket', Key: `old/${rel}.key`, Body: key.blob }))
      }
      const result = await runCli(
        ['migrate', '--from', 'openssl-kms', '-r', '-i', 's3://legacy-bucket/old/', '-o', join(dir, 'migrated'), '-w', `key=${newKeyArn}`, '-c', 'team=data', '-S', '--s3-endpoint', server.endpoint],
        { env: { ...env, ...S3RVER_ENV } },
      )
      expect(result.stderr).not.toMatch(/error/)
      expect(result.code).toBe(0)
      expect(listFiles(join(dir, 'migrated'))).toEqual(['a.txt.encrypted', 'sub/b.bin.encrypted'])
      await decryptAndCompare(dir, plain, 'openssl-kms')
    } finally {
      s3.destroy()
      await server.stop()
    }
  })
})
