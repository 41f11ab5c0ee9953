// `envcrypt migrate --from s3ec`: objects of the Amazon S3 Encryption Client, written here to s3rver from the
// public format (the SDKs' "client-side encryption meta information" appendix; Go's s3crypto and the Java
// client's AESKeyring/RsaKeyring are the references): v2 AES-GCM bodies wrapped by kms+context, AES/GCM and
// RSA-OAEP-SHA1, and v1 AES-CBC wrapped by kms, with the envelope in the metadata or in KEY.instruction.
// Each migrated message is then read by the Encryption SDK itself, not by envcrypt.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { constants, createCipheriv, generateKeyPairSync, publicEncrypt, randomBytes } from 'node:crypto'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { GenerateDataKeyCommand, KMS, KMSClient } from '@aws-sdk/client-kms'
import { buildClient, CommitmentPolicy, KmsKeyringNode } from '@aws-crypto/client-node'
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3'
import { localKmsEnv, startLocalKms, type LocalKms } from '../src/local-kms/server.js'
import { listFiles, readJsonLines, runCli, tempDir } from './helpers/cli.js'
import { startS3rver, S3RVER_ENV, type S3rverHandle } from './helpers/s3rver.js'

const GCM = 'AES/GCM/NoPadding'
const BUCKET = 's3ec-bucket'
const CREDENTIALS = { accessKeyId: 'AKIDLOCALTEST', secretAccessKey: 'local-test-secret' }

let kms: LocalKms
let oldKeyArn: string
let newKeyArn: string
let kmsClient: KMSClient
let sdkKms: KMS
let server: S3rverHandle
let s3: S3Client
let env: Record<string, string>
const wrapKey = randomBytes(32)
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })

beforeAll(async () => {
  kms = await startLocalKms()
  oldKeyArn = await kms.createKey('s3ec objects')
  newKeyArn = await kms.createKey('envcrypt')
  env = { ...localKmsEnv(kms), ...S3RVER_ENV }
  kmsClient = new KMSClient({ endpoint: kms.endpoint, region: 'us-east-1', credentials: CREDENTIALS })
  sdkKms = new KMS({ endpoint: kms.endpoint, region: 'us-east-1', credentials: CREDENTIALS })
  server = await startS3rver([BUCKET])
  s3 = new S3Client({ endpoint: server.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } })
})
afterAll(async () => {
  s3?.destroy()
  kmsClient?.destroy()
  sdkKms?.destroy()
  await server?.stop()
  await kms?.close()
})

type Wrap = 'kms+context' | 'AES/GCM' | 'RSA-OAEP-SHA1' | 'v1-kms'

/** The envelope and body an S3 Encryption Client writes for `plaintext`. */
async function s3ecObject(plaintext: Buffer, wrap: Wrap): Promise<{ body: Buffer; envelope: Record<string, string> }> {
  if (wrap === 'v1-kms') {
    const matdesc = { kms_cmk_id: oldKeyArn }
    const key = await kmsClient.send(new GenerateDataKeyCommand({ KeyId: oldKeyArn, KeySpec: 'AES_256', EncryptionContext: matdesc }))
    const iv = randomBytes(16)
    const cipher = createCipheriv('aes-256-cbc', Buffer.from(key.Plaintext!), iv)
    const body = Buffer.concat([cipher.update(plaintext), cipher.final()])
    const envelope = { 'x-amz-key': Buffer.from(key.CiphertextBlob!).toString('base64'), 'x-amz-iv': iv.toString('base64'), 'x-amz-wrap-alg': 'kms', 'x-amz-matdesc': JSON.stringify(matdesc) }
    return { body, envelope }
  }
  let cek: Buffer
  let wrapped: Buffer
  let matdesc: Record<string, string> = {}
  if (wrap === 'kms+context') {
    matdesc = { 'aws:x-amz-cek-alg': GCM, team: 'data' }
    const key = await kmsClient.send(new GenerateDataKeyCommand({ KeyId: oldKeyArn, KeySpec: 'AES_256', EncryptionContext: matdesc }))
    cek = Buffer.from(key.Plaintext!)
    wrapped = Buffer.from(key.CiphertextBlob!)
  } else if (wrap === 'AES/GCM') {
    cek = randomBytes(32)
    const nonce = randomBytes(12)
    const cipher = createCipheriv('aes-256-gcm', wrapKey, nonce)
    cipher.setAAD(Buffer.from(GCM))
    wrapped = Buffer.concat([nonce, cipher.update(cek), cipher.final(), cipher.getAuthTag()])
  } else {
    cek = randomBytes(32)
    const pseudo = Buffer.concat([Buffer.from([cek.length]), cek, Buffer.from(GCM)])
    wrapped = publicEncrypt({ key: rsa.publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha1' }, pseudo)
  }
  const iv = randomBytes(12)
  const cipher = createCipheriv('aes-256-gcm', cek, iv)
  const body = Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()])
  const envelope = {
    'x-amz-key-v2': wrapped.toString('base64'),
    'x-amz-iv': iv.toString('base64'),
    'x-amz-cek-alg': GCM,
    'x-amz-tag-len': '128',
    'x-amz-wrap-alg': wrap,
    'x-amz-matdesc': JSON.stringify(matdesc),
    'x-amz-unencrypted-content-length': String(plaintext.length),
  }
  return { body, envelope }
}

async function putS3ec(key: string, plaintext: Buffer, wrap: Wrap, where: 'metadata' | 'instruction', alter?: (body: Buffer) => Buffer): Promise<void> {
  const { body, envelope } = await s3ecObject(plaintext, wrap)
  const stored = alter ? alter(body) : body
  if (where === 'metadata') {
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: stored, Metadata: envelope }))
    return
  }
  await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: stored }))
  // Instruction files may carry the tag length as a JSON number.
  const instruction = { ...envelope, ...(envelope['x-amz-tag-len'] ? { 'x-amz-tag-len': 128 } : {}) }
  await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: `${key}.instruction`, Body: JSON.stringify(instruction) }))
}

async function sdkDecrypt(message: Buffer): Promise<{ plaintext: Buffer; context: Record<string, string> }> {
  const { decrypt } = buildClient(CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
  const keyring = new KmsKeyringNode({ keyIds: [newKeyArn], clientProvider: () => sdkKms })
  const { plaintext, messageHeader } = await decrypt(keyring, message)
  return { plaintext: Buffer.from(plaintext), context: { ...messageHeader.encryptionContext } }
}

const rsaPem = () => {
  const dir = tempDir()
  const path = join(dir, 'rsa.pem')
  writeFileSync(path, rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 })
  const aes = join(dir, 'wrap.key')
  writeFileSync(aes, wrapKey, { mode: 0o600 })
  return { rsa: path, aes }
}

describe('migrate --from s3ec', () => {
  it('v2 kms+context, AES/GCM and RSA-OAEP-SHA1, v1 CBC, in metadata and instruction files: each becomes a message the SDK reads back to the same bytes', async () => {
    const keys = rsaPem()
    const cases: Array<[string, Wrap, 'metadata' | 'instruction', number]> = [
      ['ok/kms-meta.bin', 'kms+context', 'metadata', 0],
      ['ok/kms-instr.bin', 'kms+context', 'instruction', 5000],
      ['ok/aes-meta.bin', 'AES/GCM', 'metadata', 17],
      ['ok/aes-instr.bin', 'AES/GCM', 'instruction', 1],
      ['ok/rsa-meta.bin', 'RSA-OAEP-SHA1', 'metadata', 70_000],
      ['ok/v1-meta.bin', 'v1-kms', 'metadata', 33],
      ['ok/v1-instr.bin', 'v1-kms', 'instruction', 16],
    ]
    const plaintexts = new Map<string, Buffer>()
    for (const [key, wrap, where, size] of cases) {
      plaintexts.set(key.slice(3), randomBytes(size))
      await putS3ec(key, plaintexts.get(key.slice(3))!, wrap, where)
    }
    const out = tempDir()
    kms.resetCounts()
    const result = await runCli(
      ['migrate', '--from', 's3ec', '-r', '-i', `s3://${BUCKET}/ok/`, '-o', join(out, 'new'), '-w', `key=${newKeyArn}`, '-W', `key=${oldKeyArn}`,
        '-W', 'provider=raw-aes', 'key=wrap', `material=file://${keys.aes}`, '-W', 'provider=raw-rsa', 'key=rsa', `material=file://${keys.rsa}`,
        '--allow-legacy-s3ec-v1', '--metadata-output', join(out, 'meta.jsonl'), '--summary', join(out, 'summary.json'), '--s3-endpoint', server.endpoint],
      { env },
    )
    expect(result.stderr).toBe('')
    expect(result.code).toBe(0)
    // Instruction files are envelopes, not inputs: neither migrated nor counted.
    expect(listFiles(join(out, 'new')).sort()).toEqual([...plaintexts.keys()].map((name) => `${name}.encrypted`).sort())
    // Four KMS-wrapped objects: one Decrypt each for their data keys; 7 new messages: one GenerateDataKey each.
    expect(kms.counts()).toEqual({ Decrypt: 4, GenerateDataKey: 7 })
    for (const [name, plaintext] of plaintexts) {
      const { plaintext: back, context } = await sdkDecrypt(readFileSync(join(out, 'new', `${name}.encrypted`)))
      expect(back.equals(plaintext), name).toBe(true)
      expect(context['envcrypt:migrated-from']).toBe('s3ec')
    }
    const summary = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8'))
    expect(summary).toMatchObject({ files_ok: 7, files_failed: 0, files_skipped: 0 })
    expect(readJsonLines(join(out, 'meta.jsonl'))).toHaveLength(7)
  })

  it('a tampered body, a truncated object, a wrong context, a missing instruction file and a CBC object without the opt-in each fail by name; nothing is written for them', async () => {
    const flip = (body: Buffer) => {
      const copy = Buffer.from(body)
      copy[Math.floor(copy.length / 2)] ^= 1
      return copy
    }
    await putS3ec('bad/tampered.bin', randomBytes(4000), 'kms+context', 'metadata', flip)
    await putS3ec('bad/truncated.bin', randomBytes(4000), 'AES/GCM', 'metadata', (body) => body.subarray(0, body.length - 5))
    await putS3ec('bad/good.bin', randomBytes(100), 'kms+context', 'metadata')
    await putS3ec('bad/cbc.bin', randomBytes(100), 'v1-kms', 'metadata')
    // The matdesc no longer matches the context the data key was wrapped under.
    const { body, envelope } = await s3ecObject(randomBytes(50), 'kms+context')
    envelope['x-amz-matdesc'] = JSON.stringify({ 'aws:x-amz-cek-alg': GCM, team: 'other' })
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'bad/context.bin', Body: body, Metadata: envelope }))
    // Envelope nowhere: no metadata and no KEY.instruction.
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'bad/orphan.bin', Body: randomBytes(40) }))
    const keys = rsaPem()
    const out = tempDir()
    const result = await runCli(
      ['migrate', '--from', 's3ec', '-r', '-i', `s3://${BUCKET}/bad/`, '-o', join(out, 'new'), '-w', `key=${newKeyArn}`, '-W', 'provider=raw-aes', 'key=wrap', `material=file://${keys.aes}`,
        '-S', '--summary', join(out, 'summary.json'), '--s3-endpoint', server.endpoint],
      { env },
    )
    expect(result.code).toBe(1)
    const errors = result.stderr.trim().split('\n').filter((line) => line.includes('error'))
    const named = (name: string) => errors.find((line) => line.includes(`s3://${BUCKET}/bad/${name}`))
    expect(named('tampered.bin')).toMatch(/GCM tag does not match/)
    expect(named('truncated.bin')).toMatch(/GCM tag does not match/)
    expect(named('context.bin')).toMatch(/cannot unwrap the data key/)
    expect(named('orphan.bin')).toMatch(/no envelope in the object's metadata and no instruction file/)
    expect(named('cbc.bin')).toMatch(/--allow-legacy-s3ec-v1/)
    expect(listFiles(join(out, 'new'))).toEqual(['good.bin.encrypted'])
    expect(JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8'))).toMatchObject({ files_ok: 1, files_failed: 5 })
    expect(existsSync(join(out, 'new', 'tampered.bin.encrypted'))).toBe(false)
  })

  it('an object wrapped under a KMS key other than the -W keys is refused', async () => {
    await putS3ec('limited/a.bin', randomBytes(10), 'kms+context', 'metadata')
    const out = tempDir()
    const result = await runCli(
      ['migrate', '--from', 's3ec', '-r', '-i', `s3://${BUCKET}/limited/`, '-o', join(out, 'new'), '-w', `key=${newKeyArn}`, '-W', `key=${newKeyArn}`, '-S', '--s3-endpoint', server.endpoint],
      { env },
    )
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(/limited\/a\.bin.*not one of the keys given/)
    expect(listFiles(join(out, 'new'))).toEqual([])
  })

  it('--delete-source removes each object and its instruction file once its message was read back; --sync skips what an S3 output already holds', async () => {
    const keys = rsaPem()
    await putS3ec('del/a.bin', randomBytes(700), 'kms+context', 'metadata')
    await putS3ec('del/b.bin', randomBytes(70), 'AES/GCM', 'instruction')
    const out = tempDir()
    const migrate = (extra: string[]) => runCli(
      ['migrate', '--from', 's3ec', '-r', '-w', `key=${newKeyArn}`, '-W', `key=${oldKeyArn}`, '-W', 'provider=raw-aes', 'key=wrap', `material=file://${keys.aes}`, '-S', '--s3-endpoint', server.endpoint, ...extra],
      { env },
    )
    const keysUnder = async (prefix: string) => ((await s3.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: prefix }))).Contents ?? []).map((o) => o.Key).sort()
    expect(await keysUnder('del/')).toEqual(['del/a.bin', 'del/b.bin', 'del/b.bin.instruction'])
    const deleted = await migrate(['-i', `s3://${BUCKET}/del/`, '-o', join(out, 'new'), '--delete-source'])
    expect(deleted.stderr).toBe('')
    expect(deleted.code).toBe(0)
    expect(await keysUnder('del/')).toEqual([])
    expect(listFiles(join(out, 'new'))).toEqual(['a.bin.encrypted', 'b.bin.encrypted'])

    await putS3ec('sync/c.bin', randomBytes(300), 'kms+context', 'metadata')
    const first = await migrate(['-i', `s3://${BUCKET}/sync/`, '-o', `s3://${BUCKET}/sdk-sync/`, '--sync', '--summary', join(out, 'first.json')])
    expect(first.code).toBe(0)
    const second = await migrate(['-i', `s3://${BUCKET}/sync/`, '-o', `s3://${BUCKET}/sdk-sync/`, '--sync', '--summary', join(out, 'second.json')])
    expect(second.code).toBe(0)
    expect(JSON.parse(readFileSync(join(out, 'first.json'), 'utf8'))).toMatchObject({ files_ok: 1, files_skipped: 0 })
    expect(JSON.parse(readFileSync(join(out, 'second.json'), 'utf8'))).toMatchObject({ files_ok: 0, files_skipped: 1 })
    const object = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'sdk-sync/c.bin.encrypted' }))
    expect((await sdkDecrypt(Buffer.from(await object.Body!.transformToByteArray()))).context['envcrypt:migrated-from']).toBe('s3ec')
  })

  it('-W and --allow-legacy-s3ec-v1 are refused for other schemes', async () => {
    const out = tempDir()
    const result = await runCli(['migrate', '--from', 'ddb-ctr', '-i', out, '-o', join(out, 'x'), '-w', `key=${newKeyArn}`, '--key-index', 'k.json', '--allow-legacy-s3ec-v1', '-S'], { env })
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/apply to --from s3ec only/)
  })
})

describe('-d --from s3ec', () => {
  it('decrypts S3EC objects to files (KMS discovery limited by -w, raw keys), with a metadata line naming the envelope; a tampered object leaves nothing', async () => {
    const keys = rsaPem()
    const plaintexts = new Map<string, Buffer>([['a.bin', randomBytes(3000)], ['sub/b.bin', randomBytes(0)], ['c.bin', randomBytes(65_537)]])
    await putS3ec('dec/a.bin', plaintexts.get('a.bin')!, 'kms+context', 'metadata')
    await putS3ec('dec/sub/b.bin', plaintexts.get('sub/b.bin')!, 'AES/GCM', 'instruction')
    await putS3ec('dec/c.bin', plaintexts.get('c.bin')!, 'RSA-OAEP-SHA1', 'instruction')
    await putS3ec('dec/tampered.bin', randomBytes(9000), 'kms+context', 'metadata', (body) => Buffer.concat([body.subarray(0, 100), Buffer.from([body[100]! ^ 0x80]), body.subarray(101)]))
    const out = tempDir()
    kms.resetCounts()
    const result = await runCli(
      ['-d', '--from', 's3ec', '-r', '-i', `s3://${BUCKET}/dec/`, '-o', join(out, 'plain'), '--suffix', '-w', `key=${oldKeyArn}`,
        '-w', 'provider=raw-aes', 'key=wrap', `material=file://${keys.aes}`, '-w', 'provider=raw-rsa', 'key=rsa', `material=file://${keys.rsa}`,
        '--metadata-output', join(out, 'meta.jsonl'), '--s3-endpoint', server.endpoint],
      { env },
    )
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(/dec\/tampered\.bin.*GCM tag does not match/)
    // Only the three authenticated objects, no temporary, no instruction file.
    expect(listFiles(join(out, 'plain')).sort()).toEqual(['a.bin', 'c.bin', 'sub/b.bin'])
    for (const [name, plaintext] of plaintexts) expect(readFileSync(join(out, 'plain', name)).equals(plaintext), name).toBe(true)
    expect(kms.counts()).toEqual({ Decrypt: 2 })
    const records = readJsonLines(join(out, 'meta.jsonl'))
    expect(records).toHaveLength(4)
    expect(records.find((r) => r.input.endsWith('/dec/a.bin'))).toMatchObject({ mode: 'decrypt', s3ec: { cek_alg: GCM, wrap_alg: 'kms+context', envelope: 'metadata' } })
    expect(records.find((r) => r.input.endsWith('/dec/sub/b.bin'))).toMatchObject({ s3ec: { wrap_alg: 'AES/GCM', envelope: 'instruction file' } })
    expect(records.find((r) => r.input.endsWith('/dec/tampered.bin')).error).toMatch(/GCM tag/)
  })

  it('--from s3ec is refused on encrypt, and to stdout', async () => {
    const out = tempDir()
    const result = await runCli(['-e', '--from', 's3ec', '-i', out, '-o', join(out, 'x'), '-w', `key=${newKeyArn}`, '-S'], { env })
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/apply to -d\/--decrypt only/)
    // Stdout would get plaintext before the tag at the end of the object is checked.
    const toStdout = await runCli(['-d', '--from', 's3ec', '-i', `s3://${BUCKET}/dec/a.bin`, '-o', '-', '-w', `key=${oldKeyArn}`, '-S', '--s3-endpoint', server.endpoint], { env })
    expect(toStdout.code).toBe(2)
    expect(toStdout.stderr).toMatch(/--from s3ec does not take -o -/)
  })
})
