// `envcrypt verify` through the real CLI: intact trees (official-CLI vectors included) verify; tampered,
// truncated, foreign and non-message files are each named and fail; no plaintext reaches the disk at any
// moment (file-system events are watched during the run); --against finds changed, missing and extra
// plaintext files; an S3 prefix on s3rver verifies streamed; with caching, the local KMS sees one Decrypt per
// data key.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { watch, copyFileSync, cpSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { join, relative } from 'node:path'
import { localKmsEnv, startLocalKms, type LocalKms } from '../src/local-kms/server.js'
import { listFiles, rawAesKey, readJsonLines, runCli, tempDir, VECTORS, writeTree, type CliResult } from './helpers/cli.js'
import { startS3rver, S3RVER_ENV, type S3rverHandle } from './helpers/s3rver.js'
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3'

// Each test runs the CLI several times; on the shared 2-core machine one run took up to 15 s.
vi.setConfig({ testTimeout: 180_000, hookTimeout: 180_000 })

const MiB = 1024 * 1024

/** Plaintexts that are easy to recognise on disk: every file repeats a marker of its own. */
function markedPlaintext(name: string, size: number): Buffer {
  const marker = Buffer.from(`PLAINTEXT-OF-${name}|`)
  const out = Buffer.alloc(size)
  for (let at = 0; at < size; at += marker.length) marker.copy(out, at)
  return out
}

const PLAIN: Record<string, Buffer> = {
  'empty.txt': Buffer.alloc(0),
  'one.bin': markedPlaintext('one', 1),
  'small.txt': markedPlaintext('small', 5000),
  'nested/deep/multi-frame.bin': markedPlaintext('multi-frame', 300 * 1024),
  'big.bin': markedPlaintext('big', 3 * MiB + 17),
}

/** Every file-system event under `root` while `body` runs (the watcher is proven live first). */
async function watchingDisk<T>(root: string, body: () => Promise<T>): Promise<{ result: T; touched: string[] }> {
  const touched = new Set<string>()
  let probeSeen!: () => void
  const probed = new Promise<void>((resolve) => (probeSeen = resolve))
  const watcher = watch(root, { recursive: true }, (_event, name) => {
    if (name === null) return
    if (String(name).endsWith('.watch-probe')) probeSeen()
    else touched.add(String(name))
  })
  try {
    writeFileSync(join(root, '.watch-probe'), 'x')
    await probed
    const result = await body()
    return { result, touched: [...touched].sort() }
  } finally {
    watcher.close()
  }
}

/** Every file under root whose content holds a marker of PLAIN (plaintext that reached the disk). */
function filesHoldingPlaintext(root: string, skip: string[]): string[] {
  const found: string[] = []
  for (const rel of readdirSync(root, { recursive: true }).map(String)) {
    if (skip.some((prefix) => rel === prefix || rel.startsWith(prefix + '/'))) continue
    const path = join(root, rel)
    if (statSync(path).isFile() && readFileSync(path).includes('PLAINTEXT-OF-')) found.push(rel)
  }
  return found
}

const summaryOf = (result: CliResult) => JSON.parse(result.stdout.toString())

let work: string
let key: ReturnType<typeof rawAesKey>
let otherKey: ReturnType<typeof rawAesKey>

beforeAll(async () => {
  work = tempDir('envcrypt-verify-')
  key = rawAesKey(work, 'k1')
  otherKey = rawAesKey(work, 'k2')
  writeTree(join(work, 'plain'), PLAIN)
  const encrypted = await runCli(['-e', '-r', '-i', join(work, 'plain'), '-o', join(work, 'enc'), ...key.spec, '-S', '-q'])
  expect(encrypted.code, encrypted.stderr).toBe(0)
})

describe('an intact tree', () => {
  for (const engine of ['pool', 'js']) {
    it(`verifies with the ${engine} engine: exit 0, one "verified": true record per message with "output": null, and only the metadata and summary files written`, async () => {
      const dir = join(work, `intact-${engine}`)
      mkdirSync(join(dir, 'tmp'), { recursive: true })
      const { result, touched } = await watchingDisk(work, () =>
        runCli(['verify', '-r', '-i', join(work, 'enc'), ...key.spec, '--engine', engine, '--metadata-output', join(dir, 'meta.jsonl'), '--summary', join(dir, 'summary.json')], {
          cwd: dir,
          env: { TMPDIR: join(dir, 'tmp') },
        }),
      )
      expect(result.code, result.stderr).toBe(0)
      expect(touched.map((name) => name.split('/').pop()).filter((name) => name !== 'tmp').sort()).toEqual(['meta.jsonl', 'summary.json'])
      const summary = JSON.parse(readFileSync(join(dir, 'summary.json'), 'utf8'))
      expect(summary).toMatchObject({ files_ok: 5, files_failed: 0, failures: [] })
      expect(summary.bytes_out).toBe(Object.values(PLAIN).reduce((sum, b) => sum + b.length, 0))
      const records = readJsonLines(join(dir, 'meta.jsonl'))
      expect(records.map((r) => relative(join(work, 'enc'), r.input)).sort()).toEqual(Object.keys(PLAIN).map((name) => `${name}.encrypted`).sort())
      for (const record of records) {
        expect(record).toMatchObject({ mode: 'verify', output: null, verified: true })
        expect(record.header.algorithm).toBe('AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384')
        expect(record.header_auth.tag).toMatch(/^[A-Za-z0-9+/]+=*$/)
        expect(record.error).toBeUndefined()
      }
    })
  }

  it('neither -S nor --metadata-output is required; stdout and stderr stay empty without --summary', async () => {
    const result = await runCli(['verify', '-r', '-i', join(work, 'enc'), ...key.spec])
    expect(result.code, result.stderr).toBe(0)
    expect(result.stdout.length).toBe(0)
    // Silent on success, as decrypt.
    expect(result.stderr).toBe('')
  })

  it('official-CLI vectors: signed and unsigned trees verify and equal their plaintext', async () => {
    const spec = ['-w', 'provider=raw-aes', 'namespace=envcrypt-test', 'key=key1', `material=file://${join(VECTORS, 'key.bin')}`]
    const against = ['--against', join(VECTORS, 'plaintext'), '--suffix']
    const count = listFiles(join(VECTORS, 'plaintext')).length
    for (const folder of ['ciphertext-default', 'ciphertext-unsigned']) {
      const result = await runCli(['verify', '-r', '-i', join(VECTORS, folder), ...spec, ...against, '--summary', '-', '-q'])
      expect(result.code, result.stderr).toBe(0)
      expect(summaryOf(result)).toMatchObject({ files_ok: count, files_failed: 0 })
    }
  })

  it('official-CLI vectors: v1 messages need a permissive commitment policy; --decrypt-unsigned refuses signed ones', async () => {
    const spec = ['-w', 'provider=raw-aes', 'namespace=envcrypt-test', 'key=key1', `material=file://${join(VECTORS, 'key.bin')}`]
    const against = ['--against', join(VECTORS, 'plaintext'), '--suffix']
    const count = listFiles(join(VECTORS, 'plaintext')).length
    const strict = await runCli(['verify', '-r', '-i', join(VECTORS, 'ciphertext-v1-noncommitting'), ...spec, '--summary', '-', '-q'])
    expect(strict.code).toBe(1)
    expect(summaryOf(strict)).toMatchObject({ files_ok: 0, files_failed: count })
    expect(strict.stderr).toMatch(/commitment policy/)
    const permissive = await runCli(['verify', '-r', '-i', join(VECTORS, 'ciphertext-v1-noncommitting'), ...spec, ...against, '--commitment-policy', 'require-encrypt-allow-decrypt', '-q'])
    expect(permissive.code, permissive.stderr).toBe(0)
    const unsignedOnly = await runCli(['verify', '-r', '-i', join(VECTORS, 'ciphertext-default'), ...spec, '--decrypt-unsigned', '--summary', '-', '-q'])
    expect(unsignedOnly.code).toBe(1)
    expect(summaryOf(unsignedOnly).files_failed).toBe(count)
    const unsigned = await runCli(['verify', '-r', '-i', join(VECTORS, 'ciphertext-unsigned'), ...spec, '--decrypt-unsigned', '-q'])
    expect(unsigned.code, unsigned.stderr).toBe(0)
  })
})

describe('a damaged tree', () => {
  let bad: string
  const enc = (name: string) => join(work, 'enc', `${name}.encrypted`)
  beforeAll(async () => {
    bad = join(work, 'bad')
    mkdirSync(bad)
    copyFileSync(enc('small.txt'), join(bad, 'intact.encrypted'))
    // One bit of the last batch of a 3 MiB message: decrypt would have released the batches before it.
    const frame = readFileSync(enc('big.bin'))
    frame[frame.length - 200_000] ^= 0x10
    writeFileSync(join(bad, 'flipped-frame.encrypted'), frame)
    const signature = readFileSync(enc('nested/deep/multi-frame.bin'))
    signature[signature.length - 5] ^= 0x01
    writeFileSync(join(bad, 'flipped-signature.encrypted'), signature)
    copyFileSync(enc('big.bin'), join(bad, 'truncated.encrypted'))
    truncateSync(join(bad, 'truncated.encrypted'), 2 * MiB)
    writeFileSync(join(bad, 'not-a-message.encrypted'), markedPlaintext('not-a-message', 10_000))
    writeTree(join(work, 'plain-other'), { 'other-key': markedPlaintext('other-key', 9000) })
    const other = await runCli(['-e', '-i', join(work, 'plain-other', 'other-key'), '-o', join(bad, 'other-key.encrypted'), ...otherKey.spec, '-S', '-q'])
    expect(other.code, other.stderr).toBe(0)
  })

  for (const engine of ['pool', 'js']) {
    it(`with the ${engine} engine: each bad file is named with its reason, exit 1, and no plaintext appears on disk at any time`, async () => {
      const dir = join(work, `damaged-${engine}`)
      mkdirSync(join(dir, 'tmp'), { recursive: true })
      const { result, touched } = await watchingDisk(work, () =>
        runCli(['verify', '-r', '-i', bad, ...key.spec, '--engine', engine, '--metadata-output', join(dir, 'meta.jsonl'), '--summary', '-'], { cwd: dir, env: { TMPDIR: join(dir, 'tmp') } }),
      )
      expect(result.code).toBe(1)
      expect(touched.map((name) => name.split('/').pop()).filter((name) => name !== 'tmp')).toEqual(['meta.jsonl'])
      expect(filesHoldingPlaintext(work, ['plain', 'plain-other', 'bad'])).toEqual([])
      const errorFor = (name: string) => result.stderr.split('\n').find((line) => line.startsWith(`envcrypt: error: ${join(bad, name)}: `))
      expect(errorFor('flipped-frame.encrypted')).toMatch(/frame \d+ failed authentication/)
      expect(errorFor('flipped-signature.encrypted')).toMatch(/signature verification failed/)
      expect(errorFor('truncated.encrypted')).toMatch(/truncated/)
      expect(errorFor('not-a-message.encrypted')).toMatch(/not an AWS Encryption SDK message|malformed/i)
      expect(errorFor('other-key.encrypted')).toMatch(/no wrapping key could decrypt the data key/)
      expect(errorFor('intact.encrypted')).toBeUndefined()
      expect(summaryOf(result)).toMatchObject({ files_ok: 1, files_failed: 5 })
      const records = new Map(readJsonLines(join(dir, 'meta.jsonl')).map((r) => [relative(bad, r.input), r]))
      expect([...records.keys()].sort()).toEqual(readdirSync(bad).sort())
      expect(records.get('intact.encrypted')).toMatchObject({ verified: true, output: null })
      for (const name of ['flipped-frame', 'flipped-signature', 'truncated', 'not-a-message', 'other-key']) {
        const record = records.get(`${name}.encrypted`)
        expect(record).toMatchObject({ verified: false, output: null, mode: 'verify' })
        expect(record.error).toBe(errorFor(`${name}.encrypted`)!.slice(`envcrypt: error: ${join(bad, name)}.encrypted: `.length))
      }
      expect(records.get('not-a-message.encrypted').header).toBeNull()
    })
  }
})

describe('--against', () => {
  const enc = (name: string) => join(work, 'enc', `${name}.encrypted`)

  it('names one changed, one missing and one extra plaintext file (exit 1); the others verify', async () => {
    const dir = join(work, 'against-run')
    mkdirSync(join(dir, 'tmp'), { recursive: true })
    const tree = join(work, 'against-simple')
    cpSync(join(work, 'plain'), tree, { recursive: true })
    const changed = readFileSync(join(tree, 'big.bin'))
    changed[2 * MiB + 3] ^= 0x04
    writeFileSync(join(tree, 'big.bin'), changed)
    rmSync(join(tree, 'small.txt'))
    writeFileSync(join(tree, 'nested', 'extra.txt'), 'a file nobody encrypted')
    for (const engine of ['pool', 'js']) {
      const { result, touched } = await watchingDisk(work, () =>
        runCli(['verify', '-r', '-i', join(work, 'enc'), ...key.spec, '--against', tree, '--engine', engine, '--metadata-output', join(dir, `${engine}.jsonl`), '--summary', '-'], {
          cwd: dir,
          env: { TMPDIR: join(dir, 'tmp') },
        }),
      )
      expect(result.code).toBe(1)
      expect(touched.map((name) => name.split('/').pop()).filter((name) => name !== 'tmp')).toEqual([`${engine}.jsonl`])
      const lines = result.stderr.split('\n').filter((line) => line.startsWith('envcrypt: error: '))
      expect(lines).toHaveLength(3)
      expect(lines.find((l) => l.includes(enc('big.bin')))).toMatch(new RegExp(`intact, but its plaintext differs from ${join(tree, 'big.bin')} at byte ${2 * MiB + 3}$`))
      expect(lines.find((l) => l.includes(enc('small.txt')))).toMatch(new RegExp(`intact, but there is no plaintext file ${join(tree, 'small.txt')}$`))
      expect(lines.find((l) => l.includes(join(tree, 'nested', 'extra.txt')))).toMatch(/plaintext file with no message \(no nested\/extra.txt.encrypted among the messages\)/)
      expect(summaryOf(result)).toMatchObject({ files_ok: 3, files_failed: 3 })
      const records = readJsonLines(join(dir, `${engine}.jsonl`))
      expect(records).toHaveLength(5)
      expect(records.filter((r) => r.verified === false).map((r) => relative(join(work, 'enc'), r.input)).sort()).toEqual(['big.bin.encrypted', 'small.txt.encrypted'])
    }
  })

  it('a plaintext file shorter or longer than the message fails; --suffix names the suffix to remove', async () => {
    const tree = join(work, 'against-lengths')
    cpSync(join(work, 'plain'), tree, { recursive: true })
    writeFileSync(join(tree, 'small.txt'), PLAIN['small.txt'].subarray(0, 4999))
    writeFileSync(join(tree, 'one.bin'), Buffer.concat([PLAIN['one.bin'], Buffer.from('!')]))
    const result = await runCli(['verify', '-r', '-i', join(work, 'enc'), ...key.spec, '--against', tree, '--summary', '-'])
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(/small\.txt\.encrypted: the message is intact, but .*small\.txt is shorter \(4999 bytes\) than the message's plaintext/)
    expect(result.stderr).toMatch(/one\.bin\.encrypted: the message is intact, but .*one\.bin is longer than the message's 1 bytes of plaintext/)
    expect(summaryOf(result)).toMatchObject({ files_ok: 3, files_failed: 2 })
    const wrongSuffix = await runCli(['verify', '-r', '-i', join(work, 'enc'), ...key.spec, '--against', join(work, 'plain'), '--suffix', '.enc', '--summary', '-'])
    expect(wrongSuffix.code).toBe(1)
    expect(summaryOf(wrongSuffix)).toMatchObject({ files_ok: 0, files_failed: 10 })
    expect(wrongSuffix.stderr).toMatch(/does not end in "\.enc"/)
  })

  it('with --shard, N workers together report every mismatch exactly once', async () => {
    const tree = join(work, 'against-shards')
    cpSync(join(work, 'plain'), tree, { recursive: true })
    writeFileSync(join(tree, 'small.txt'), markedPlaintext('changed', 5000))
    writeFileSync(join(tree, 'extra-1'), 'x')
    writeFileSync(join(tree, 'extra-2'), 'y')
    const summaries = []
    for (const shard of ['0/3', '1/3', '2/3']) {
      const result = await runCli(['verify', '-r', '-i', join(work, 'enc'), ...key.spec, '--against', tree, '--shard', shard, '--summary', '-', '-q'])
      summaries.push(summaryOf(result))
    }
    expect(summaries.reduce((sum, s) => sum + s.files_ok, 0)).toBe(4)
    expect(summaries.flatMap((s) => s.failures.map((f: { input: string }) => relative(work, f.input))).sort()).toEqual(['against-shards/extra-1', 'against-shards/extra-2', 'enc/small.txt.encrypted'])
  })
})

describe('--manifest', () => {
  it('verifies only the listed messages; a listed file that is missing fails', async () => {
    const manifest = join(work, 'manifest.txt')
    writeFileSync(manifest, 'small.txt.encrypted\nnested/deep/multi-frame.bin.encrypted\nnot-there.encrypted\n')
    const result = await runCli(['verify', '-i', join(work, 'enc'), '--manifest', manifest, ...key.spec, '--summary', '-'])
    expect(result.code).toBe(1)
    expect(summaryOf(result)).toMatchObject({ files_ok: 2, files_failed: 1 })
    expect(result.stderr).toMatch(/not-there\.encrypted: listed in the manifest \(line 3\)/)
  })
})

describe('refusals', () => {
  it('needs -i and -w; --suffix needs --against; -o is not a verify flag', async () => {
    for (const [args, message] of [
      [['verify', ...key.spec], /-i\/--input is required/],
      [['verify', '-i', join(work, 'enc')], /-w\/--wrapping-keys is required/],
      [['verify', '-r', '-i', join(work, 'enc'), ...key.spec, '--suffix', '.x'], /--suffix applies only with --against/],
      [['verify', '-r', '-i', join(work, 'enc'), '-o', join(work, 'out'), ...key.spec], /Unknown argument/],
      [['verify', '-r', '-i', join(work, 'enc'), ...key.spec, '--against', join(work, 'nope')], /--against .*nope: not a directory/],
    ] as Array<[string[], RegExp]>) {
      const result = await runCli(args)
      expect(result.code, args.join(' ')).toBe(2)
      expect(result.stderr).toMatch(message)
    }
  })
})

describe('an S3 prefix on s3rver', () => {
  let server: S3rverHandle
  let env: Record<string, string>
  let client: S3Client
  beforeAll(async () => {
    server = await startS3rver(['verify-bucket'])
    env = { ...S3RVER_ENV, AWS_ENDPOINT_URL_S3: server.endpoint }
    client = new S3Client({ endpoint: server.endpoint, forcePathStyle: true, region: 'us-east-1', credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } })
    const up = await runCli(['-e', '-r', '-i', join(work, 'plain'), '-o', 's3://verify-bucket/enc/', ...key.spec, '-S', '-q'], { env })
    expect(up.code, up.stderr).toBe(0)
    for (const [name, content] of Object.entries(PLAIN)) await client.send(new PutObjectCommand({ Bucket: 'verify-bucket', Key: `plain/${name}`, Body: content }))
  })
  afterAll(async () => {
    client?.destroy()
    await server?.stop()
  })

  it('verifies streamed against local plaintext and against a plaintext prefix, writing nothing locally', async () => {
    const dir = join(work, 's3-run')
    mkdirSync(join(dir, 'tmp'), { recursive: true })
    for (const against of [join(work, 'plain'), 's3://verify-bucket/plain/']) {
      const metadata = join(dir, `meta-${against.startsWith('s3') ? 's3' : 'local'}.jsonl`)
      const { result, touched } = await watchingDisk(work, () =>
        runCli(['verify', '-r', '-i', 's3://verify-bucket/enc/', ...key.spec, '--against', against, '--metadata-output', metadata, '--summary', '-'], {
          cwd: dir,
          env: { ...env, TMPDIR: join(dir, 'tmp') },
        }),
      )
      expect(result.code, result.stderr).toBe(0)
      expect(touched.map((name) => name.split('/').pop()).filter((name) => name !== 'tmp')).toEqual([metadata.split('/').pop()])
      expect(summaryOf(result)).toMatchObject({ files_ok: 5, files_failed: 0 })
      const records = readJsonLines(metadata)
      expect(records.map((r) => r.input).sort()).toEqual(Object.keys(PLAIN).map((name) => `s3://verify-bucket/enc/${name}.encrypted`).sort())
      expect(records.every((r) => r.verified === true && r.output === null)).toBe(true)
    }
  })

  it('names a damaged object and a changed plaintext object (exit 1); the others verify', async () => {
    const object = await client.send(new GetObjectCommand({ Bucket: 'verify-bucket', Key: 'enc/nested/deep/multi-frame.bin.encrypted' }))
    const bytes = Buffer.from(await object.Body!.transformToByteArray())
    bytes[bytes.length - 1000] ^= 0x80
    await client.send(new PutObjectCommand({ Bucket: 'verify-bucket', Key: 'damaged/multi-frame.bin.encrypted', Body: bytes }))
    const good = await client.send(new GetObjectCommand({ Bucket: 'verify-bucket', Key: 'enc/small.txt.encrypted' }))
    await client.send(new PutObjectCommand({ Bucket: 'verify-bucket', Key: 'damaged/small.txt.encrypted', Body: Buffer.from(await good.Body!.transformToByteArray()) }))
    const damaged = await runCli(['verify', '-r', '-i', 's3://verify-bucket/damaged/', ...key.spec, '--summary', '-'], { env })
    expect(damaged.code).toBe(1)
    expect(damaged.stderr).toMatch(/envcrypt: error: s3:\/\/verify-bucket\/damaged\/multi-frame\.bin\.encrypted: (frame \d+ failed authentication|signature verification failed)/)
    expect(summaryOf(damaged)).toMatchObject({ files_ok: 1, files_failed: 1 })

    await client.send(new PutObjectCommand({ Bucket: 'verify-bucket', Key: 'plain/small.txt', Body: markedPlaintext('changed', 5000) }))
    const changed = await runCli(['verify', '-r', '-i', 's3://verify-bucket/enc/', ...key.spec, '--against', 's3://verify-bucket/plain/', '--summary', '-'], { env })
    expect(changed.code).toBe(1)
    expect(changed.stderr).toMatch(/enc\/small\.txt\.encrypted: the message is intact, but its plaintext differs from s3:\/\/verify-bucket\/plain\/small\.txt at byte 13$/m)
    expect(summaryOf(changed)).toMatchObject({ files_ok: 4, files_failed: 1 })
  })
})

describe('KMS calls with the local KMS', () => {
  let kms: LocalKms
  let keyArn: string
  let env: Record<string, string>
  beforeAll(async () => {
    kms = await startLocalKms()
    keyArn = await kms.createKey('verify.test')
    env = localKmsEnv(kms)
  })
  afterAll(() => kms?.close())

  it('with caching, exactly one Decrypt per data key at the server (pool and js engines); without, one per message', async () => {
    const files: Record<string, Buffer> = {}
    for (let i = 0; i < 30; i++) files[`f${String(i).padStart(2, '0')}`] = randomBytes(2000)
    writeTree(join(work, 'kms-plain'), files)
    const meta = join(work, 'kms-encrypt.jsonl')
    const caching = ['--caching', 'capacity=10', 'max_age=60', 'max_messages_encrypted=10']
    const encrypted = await runCli(['-e', '-r', '-i', join(work, 'kms-plain'), '-o', join(work, 'kms-enc'), '-w', `key=${keyArn}`, ...caching, '--metadata-output', meta, '-j', '1', '-q'], { env })
    expect(encrypted.code, encrypted.stderr).toBe(0)
    const dataKeys = new Set(readJsonLines(meta).map((r) => r.header.encrypted_data_keys[0].encrypted_data_key)).size
    expect(dataKeys).toBe(3)
    for (const engine of ['pool', 'js']) {
      kms.resetCounts()
      const result = await runCli(['verify', '-r', '-i', join(work, 'kms-enc'), '-w', `key=${keyArn}`, '--caching', 'capacity=10', 'max_age=60', '--engine', engine, '-j', '16', '--summary', '-'], { env })
      expect(result.code, result.stderr).toBe(0)
      expect(kms.counts().Decrypt).toBe(dataKeys)
      expect(summaryOf(result)).toMatchObject({ files_ok: 30, kms_calls: { Decrypt: dataKeys } })
    }
    kms.resetCounts()
    const uncached = await runCli(['verify', '-r', '-i', join(work, 'kms-enc'), '-w', `key=${keyArn}`, '-q'], { env })
    expect(uncached.code, uncached.stderr).toBe(0)
    expect(kms.counts().Decrypt).toBe(30)
  })
})
