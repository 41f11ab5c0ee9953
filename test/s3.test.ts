// S3 inputs and outputs, end to end: the real CLI (dist/cli.js) against s3rver, through a recording proxy.
import { spawn } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { GetObjectCommand, HeadObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3'
import pLimit from 'p-limit'
import { startS3rver, S3RVER_ENV, type S3rverHandle } from './helpers/s3rver.js'
import { startRecordingProxy, type RecordedRequest, type RecordingProxy } from './helpers/recording-proxy.js'

const ROOT = join(import.meta.dirname, '..')
const CLI = join(ROOT, 'dist', 'cli.js')
const BUCKET = 'envcrypt-test'
const MiB = 1024 * 1024
const UNSIGNED = 'AES_256_GCM_HKDF_SHA512_COMMIT_KEY'

let server: S3rverHandle
let proxy: RecordingProxy
let client: S3Client
let work: string
let keyFile: string
let wrap: string[]

interface CliResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: Buffer
  stderr: string
}

/** Runs the CLI asynchronously (the proxy and stub servers live in this process). */
function runCli(args: string[], options: { stdin?: Buffer; env?: Record<string, string>; onSpawn?: (child: ReturnType<typeof spawn>) => void } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      cwd: work,
      env: {
        PATH: process.env.PATH ?? '',
        HOME: work,
        AWS_CONFIG_FILE: join(work, 'no-aws-config'),
        AWS_SHARED_CREDENTIALS_FILE: join(work, 'no-aws-credentials'),
        AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
        ...S3RVER_ENV,
        AWS_ENDPOINT_URL_S3: proxy.endpoint,
        ...options.env,
      },
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    const stdout: Buffer[] = []
    let stderr = ''
    child.stdout!.on('data', (chunk: Buffer) => stdout.push(chunk))
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk))
    child.on('error', reject)
    // The CLI may exit before reading all of its input (refusals, signals).
    child.stdin!.on('error', () => undefined)
    child.on('close', (code, signal) => resolve({ code, signal, stdout: Buffer.concat(stdout), stderr }))
    if (options.onSpawn) options.onSpawn(child)
    else child.stdin!.end(options.stdin)
  })
}

async function writeFiles(root: string, files: Record<string, Buffer>): Promise<void> {
  for (const [name, content] of Object.entries(files)) {
    await mkdir(join(root, name, '..'), { recursive: true })
    await writeFile(join(root, name), content)
  }
}

async function readTree(root: string): Promise<Record<string, string>> {
  const tree: Record<string, string> = {}
  for (const entry of await readdir(root, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue
    const full = join(entry.parentPath, entry.name)
    tree[relative(root, full)] = createHash('sha256').update(await readFile(full)).digest('hex')
  }
  return tree
}

const hashes = (files: Record<string, Buffer>) =>
  Object.fromEntries(Object.entries(files).map(([name, content]) => [name, createHash('sha256').update(content).digest('hex')]))

async function headObject(key: string) {
  try {
    return await client.send(new HeadObjectCommand({ Bucket: BUCKET, Key: key }))
  } catch (err) {
    if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return undefined
    throw err
  }
}

async function getObject(key: string): Promise<Buffer> {
  const answer = await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }))
  return Buffer.from(await answer.Body!.transformToByteArray())
}

/** Requests for one object key since `since` (an index into proxy.requests). */
function requestsFor(key: string, since = 0): RecordedRequest[] {
  const path = `/${BUCKET}/${key.split('/').map(encodeURIComponent).join('/')}`
  return proxy.requests.slice(since).filter((r) => r.url === path || r.url.startsWith(path + '?'))
}

beforeAll(async () => {
  if (!existsSync(CLI)) throw new Error('dist/cli.js is missing: run `npm run build` first (npm test does)')
  work = await mkdtemp(join(tmpdir(), 'envcrypt-s3-test-'))
  server = await startS3rver([BUCKET])
  proxy = await startRecordingProxy(server.endpoint)
  client = new S3Client({ endpoint: server.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' }, requestChecksumCalculation: 'WHEN_REQUIRED' })
  keyFile = join(work, 'key.bin')
  const keygen = await runCli(['keygen', '--out', keyFile])
  expect(keygen.code, keygen.stderr).toBe(0)
  wrap = ['-w', 'provider=raw-aes', 'key=k1', `material=file://${keyFile}`]
})

afterAll(async () => {
  client?.destroy()
  await proxy?.close()
  await server?.stop()
  if (work) await rm(work, { recursive: true, force: true })
})

describe('S3 through the CLI', () => {
  it('round-trips a nested unicode tree (0 B to 50 MiB) byte for byte, the large file as a multipart upload', async () => {
    const files: Record<string, Buffer> = {
      'empty': Buffer.alloc(0),
      'one-byte': Buffer.from('x'),
      'frame-4096': randomBytes(4096),
      'a/b/c/deep.txt': Buffer.from('deep\n'),
      'a/odd size': randomBytes(MiB + 3),
      'ünïcødé/日本語 файл.txt': Buffer.from('unicode ✓\n'),
      'big/fifty.bin': randomBytes(50 * MiB),
    }
    const source = join(work, 'tree-src')
    await writeFiles(source, files)
    const since = proxy.requests.length
    const encrypted = await runCli(['-e', '-r', '-i', source, '-o', `s3://${BUCKET}/tree/`, ...wrap, '-S'])
    expect(encrypted.code, encrypted.stderr).toBe(0)

    const head = await headObject('tree/ünïcødé/日本語 файл.txt.encrypted')
    expect(head?.Metadata).toMatchObject({ 'envcrypt-format': 'aws-encryption-sdk-message', 'envcrypt-source-size': String(files['ünïcødé/日本語 файл.txt'].length) })
    expect(head?.Metadata?.['envcrypt-version']).toMatch(/^\d+\.\d+\.\d+/)
    expect(Number(head?.Metadata?.['envcrypt-source-mtime-ms'])).toBe(Math.trunc((await stat(join(source, 'ünïcødé/日本語 файл.txt'))).mtimeMs))

    // More than one part for the 50 MiB file (8 MiB parts), and no other file went multipart.
    const big = requestsFor('tree/big/fifty.bin.encrypted', since)
    expect(big.filter((r) => r.method === 'POST' && /[?&]uploads/.test(r.url))).toHaveLength(1)
    expect(big.filter((r) => r.method === 'PUT' && /partNumber=/.test(r.url)).length).toBe(7)
    expect(big.filter((r) => r.method === 'POST' && /uploadId=/.test(r.url))).toHaveLength(1)
    // Byte-exact uploads: no aws-chunked framing, no ACL.
    for (const request of proxy.requests.slice(since).filter((r) => r.method === 'PUT')) {
      expect(request.headers['content-encoding'] ?? '').not.toMatch(/aws-chunked/)
      expect(request.headers['x-amz-acl']).toBeUndefined()
    }

    const output = join(work, 'tree-out')
    const decrypted = await runCli(['-d', '-r', '-i', `s3://${BUCKET}/tree/`, '-o', output, '--suffix', ...wrap, '-S'])
    expect(decrypted.code, decrypted.stderr).toBe(0)
    const expected = Object.fromEntries(Object.entries(hashes(files)).map(([name, hash]) => [`${name}.encrypted`, hash]))
    expect(await readTree(output)).toEqual(expected)
  })

  it('--s3-force-path-style addresses a named endpoint as ENDPOINT/bucket/key (the SDK would put the bucket in the host name)', async () => {
    const named = proxy.endpoint.replace('127.0.0.1', 'localhost')
    const source = join(work, 'path-style.txt')
    await writeFile(source, 'path style')
    const key = 'path-style/object'
    for (const [flags, pathStyle] of [[['--s3-force-path-style'], true], [[], false]] as const) {
      const since = proxy.requests.length
      const result = await runCli(['-e', '-i', source, '-o', `s3://${BUCKET}/${key}-${pathStyle}`, ...wrap, '-S', ...flags], { env: { AWS_ENDPOINT_URL_S3: named, AWS_MAX_ATTEMPTS: '1' } })
      const pathStyleRequests = requestsFor(`${key}-${pathStyle}`, since).filter((r) => r.headers.host === new URL(named).host)
      if (pathStyle) {
        expect(result.code, result.stderr).toBe(0)
        expect(pathStyleRequests.length).toBeGreaterThan(0)
      } else {
        // Virtual-hosted: the bucket goes in the host name (${BUCKET}.localhost), so no request has this path and
        // host; whether that name resolves here does not matter.
        expect(pathStyleRequests).toEqual([])
      }
    }
  })

  it('lists more than 1,000 objects (a flat prefix, paginated) and decrypts every one', async () => {
    // Flat on purpose: s3rver pages in file-system order and drops keys in nested trees past 1,000 (FACTS.md).
    const plain = join(work, 'many-one.txt')
    await writeFile(plain, 'one of many\n')
    const one = await runCli(['-e', '-i', plain, '-o', '-', '--algorithm', UNSIGNED, ...wrap, '-S'])
    expect(one.code, one.stderr).toBe(0)
    const count = 1010
    const limit = pLimit(16)
    await Promise.all(
      Array.from({ length: count }, (_, i) =>
        limit(() => client.send(new PutObjectCommand({ Bucket: BUCKET, Key: `many/f${String(i).padStart(4, '0')}`, Body: one.stdout }))),
      ),
    )
    const since = proxy.requests.length
    const output = join(work, 'many-out')
    const decrypted = await runCli(['-d', '-r', '-i', `s3://${BUCKET}/many/`, '-o', output, '--suffix', '-j', '16', ...wrap, '-S', '--summary', '-'])
    expect(decrypted.code, decrypted.stderr).toBe(0)
    expect(JSON.parse(decrypted.stdout.toString()).files_ok).toBe(count)
    const names = await readdir(output)
    expect(names).toHaveLength(count)
    expect(await readFile(join(output, 'f1009'), 'utf8')).toBe('one of many\n')
    const listings = proxy.requests.slice(since).filter((r) => r.method === 'GET' && /list-type=2/.test(r.url))
    expect(listings.length).toBe(2)
    expect(listings[1].url).toMatch(/continuation-token=/)
  })

  it('writes and reads single objects by exact key, and streams stdin to S3 and S3 to stdout', async () => {
    const plain = join(work, 'single.txt')
    const content = randomBytes(100_000)
    await writeFile(plain, content)
    const encrypted = await runCli(['-e', '-i', plain, '-o', `s3://${BUCKET}/single/exact-name`, ...wrap, '-S'])
    expect(encrypted.code, encrypted.stderr).toBe(0)
    expect(await headObject('single/exact-name')).toBeDefined()
    const back = join(work, 'single-back.bin')
    const decrypted = await runCli(['-d', '-i', `s3://${BUCKET}/single/exact-name`, '-o', back, ...wrap, '-S'])
    expect(decrypted.code, decrypted.stderr).toBe(0)
    expect((await readFile(back)).equals(content)).toBe(true)

    const piped = await runCli(['-e', '-i', '-', '-o', `s3://${BUCKET}/single/from-stdin`, ...wrap, '-S'], { stdin: content })
    expect(piped.code, piped.stderr).toBe(0)
    expect((await headObject('single/from-stdin'))?.Metadata?.['envcrypt-source-size']).toBeUndefined()
    const out = await runCli(['-d', '-i', `s3://${BUCKET}/single/from-stdin`, '-o', '-', ...wrap, '-S'])
    expect(out.code, out.stderr).toBe(0)
    expect(out.stdout.equals(content)).toBe(true)

    const onto = await runCli(['-e', '-i', `s3://${BUCKET}/single/exact-name`, '-o', `s3://${BUCKET}/single/exact-name`, ...wrap, '-S'])
    expect(onto.code).toBe(2)
    expect(onto.stderr).toContain('the output is the input itself')

    // A tree whose output prefix is inside its input prefix: the next run would list the outputs as inputs.
    for (const [input, output] of [[`s3://${BUCKET}/single/`, `s3://${BUCKET}/single/enc/`], [`s3://${BUCKET}/single`, `s3://${BUCKET}/single/enc/`], [`s3://${BUCKET}`, `s3://${BUCKET}/enc/`]]) {
      const inside = await runCli(['-e', '-r', '-i', input, '-o', output, ...wrap, '-S'])
      expect(inside.code, `${input} -> ${output}`).toBe(2)
      expect(inside.stderr).toContain('the output prefix is inside the input prefix')
    }
    expect(await headObject('single/enc/exact-name.encrypted')).toBeUndefined()
    // A sibling prefix that only shares the name's beginning is not inside.
    const sibling = await runCli(['-e', '-r', '-i', `s3://${BUCKET}/single`, '-o', `s3://${BUCKET}/single-enc/`, ...wrap, '-S'])
    expect(sibling.code, sibling.stderr).toBe(0)
    expect(await headObject('single-enc/exact-name.encrypted')).toBeDefined()

    const missing = await runCli(['-d', '-i', `s3://${BUCKET}/single/no-such-key`, '-o', '-', ...wrap, '-S'])
    expect(missing.code).toBe(1)
    expect(missing.stderr).toContain(`s3://${BUCKET}/single/no-such-key`)
  })

  it('--sync skips unchanged files and uploads changed ones', async () => {
    const source = join(work, 'sync-src')
    await writeFiles(source, { 'same.txt': Buffer.from('same\n'), 'edited.txt': Buffer.from('before\n'), 'touched.txt': Buffer.from('touched\n') })
    const sync = () => runCli(['-e', '-r', '-i', source, '-o', `s3://${BUCKET}/sync/`, '--sync', '--summary', '-', '--algorithm', UNSIGNED, ...wrap, '-S'])
    const summary = (result: CliResult) => {
      expect(result.code, result.stderr).toBe(0)
      const { files_ok, files_skipped } = JSON.parse(result.stdout.toString())
      return { files_ok, files_skipped }
    }
    expect(summary(await sync())).toEqual({ files_ok: 3, files_skipped: 0 })
    expect(summary(await sync())).toEqual({ files_ok: 0, files_skipped: 3 })

    await writeFile(join(source, 'edited.txt'), 'after, longer\n')
    const later = new Date(Date.now() + 5000)
    await utimes(join(source, 'touched.txt'), later, later)
    expect(summary(await sync())).toEqual({ files_ok: 2, files_skipped: 1 })
    expect(summary(await sync())).toEqual({ files_ok: 0, files_skipped: 3 })

    const out = await runCli(['-d', '-i', `s3://${BUCKET}/sync/edited.txt.encrypted`, '-o', '-', ...wrap, '-S'])
    expect(out.stdout.toString()).toBe('after, longer\n')
    const usage = await runCli(['-e', '-r', '-i', source, '-o', join(work, 'sync-local'), '--sync', ...wrap, '-S'])
    expect(usage.code).toBe(2)
    expect(usage.stderr).toContain('--sync needs an s3:// output')
  })

  it('refuses object keys that would escape the output directory (crafted listing from a stub server)', async () => {
    let listedKeys: string[] = []
    const gets: string[] = []
    const stub = http.createServer((req, res) => {
      if (!req.url!.includes('list-type=2')) {
        gets.push(req.url!)
        res.writeHead(404).end()
        return
      }
      const contents = listedKeys
        .map((key) => `<Contents><Key>${key.replace(/&/g, '&amp;').replace(/</g, '&lt;')}</Key><Size>10</Size><LastModified>2024-01-01T00:00:00.000Z</LastModified><ETag>"0"</ETag></Contents>`)
        .join('')
      res.writeHead(200, { 'content-type': 'application/xml' })
      res.end(`<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>stub</Name><Prefix>p/</Prefix><KeyCount>${listedKeys.length}</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>${contents}</ListBucketResult>`)
    })
    await new Promise<void>((resolve) => stub.listen(0, '127.0.0.1', resolve))
    const endpoint = `http://127.0.0.1:${(stub.address() as AddressInfo).port}`
    try {
      const cases: Array<[string, string]> = [
        ['p/../escape', '".." segment'],
        ['p/ok/../../escape', '".." segment'],
        ['p//etc/passwd', 'absolute path'],
        ['p/dir\\..\\escape', 'backslash'],
      ]
      for (const [badKey, why] of cases) {
        listedKeys = ['p/fine.txt', badKey]
        const output = join(work, 'traversal-out', 'inner')
        const result = await runCli(['-d', '-r', '-i', 's3://stub/p/', '-o', output, '--s3-endpoint', endpoint, ...wrap, '-S'])
        expect(result.code, badKey).toBe(1)
        expect(result.stderr).toContain('unsafe object key')
        expect(result.stderr).toContain(why)
        expect(existsSync(join(work, 'traversal-out'))).toBe(false)
        expect(existsSync(join(work, 'escape'))).toBe(false)
      }
      expect(gets).toEqual([])
    } finally {
      await new Promise<void>((resolve) => stub.close(() => resolve()))
    }
  })

  it('a decrypt that fails authentication leaves no output: neither a local file nor an S3 object or multipart upload', async () => {
    const plain = join(work, 'tamper.bin')
    await writeFile(plain, randomBytes(20 * MiB))
    const encrypted = await runCli(['-e', '-i', plain, '-o', `s3://${BUCKET}/tamper/good.enc`, ...wrap, '-S'])
    expect(encrypted.code, encrypted.stderr).toBe(0)
    const message = await getObject('tamper/good.enc')
    message[message.length - 5000] ^= 1
    await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'tamper/bad.enc', Body: message }))

    const outputDir = join(work, 'tamper-out')
    await mkdir(outputDir)
    const local = await runCli(['-d', '-i', `s3://${BUCKET}/tamper/bad.enc`, '-o', join(outputDir, 'bad.plain'), ...wrap, '-S'])
    expect(local.code).toBe(1)
    expect(local.stderr).toContain(`s3://${BUCKET}/tamper/bad.enc`)
    expect(await readdir(outputDir)).toEqual([])

    // S3 to S3: by then more than one 8 MiB part of plaintext was uploaded; the upload must be aborted.
    const since = proxy.requests.length
    const remote = await runCli(['-d', '-i', `s3://${BUCKET}/tamper/bad.enc`, '-o', `s3://${BUCKET}/tamper/bad.plain`, ...wrap, '-S'])
    expect(remote.code).toBe(1)
    expect(await headObject('tamper/bad.plain')).toBeUndefined()
    const upload = requestsFor('tamper/bad.plain', since)
    expect(upload.filter((r) => r.method === 'PUT' && /partNumber=/.test(r.url)).length).toBeGreaterThanOrEqual(1)
    expect(upload.filter((r) => r.method === 'POST' && /uploadId=/.test(r.url))).toEqual([])
    expect(upload.filter((r) => r.method === 'DELETE' && /uploadId=/.test(r.url))).toHaveLength(1)
  })

  it('an upload interrupted by SIGTERM leaves no object and aborts its multipart upload', async () => {
    const since = proxy.requests.length
    const key = 'interrupted/from-stdin'
    const result = await runCli(['-e', '-i', '-', '-o', `s3://${BUCKET}/${key}`, ...wrap, '-S'], {
      onSpawn: (child) => {
        child.stdin!.write(randomBytes(20 * MiB))
        const poll = setInterval(() => {
          if (requestsFor(key, since).some((r) => /partNumber=/.test(r.url))) {
            clearInterval(poll)
            // stdin stays open, as a producer still writing would keep it: only the signal can end this run.
            child.kill('SIGTERM')
            child.once('exit', () => child.stdin!.end())
          }
        }, 20)
      },
    })
    expect(result.code, result.stderr).toBe(143)
    expect(await headObject(key)).toBeUndefined()
    const upload = requestsFor(key, since)
    expect(upload.filter((r) => r.method === 'POST' && /uploadId=/.test(r.url))).toEqual([])
    expect(upload.filter((r) => r.method === 'DELETE' && /uploadId=/.test(r.url))).toHaveLength(1)
  })

  it('--no-overwrite makes the write itself conditional (If-None-Match: *); a 412 from S3 names the existing output', async () => {
    const large = join(work, 'no-clobber-large.bin')
    const small = join(work, 'no-clobber-small.bin')
    await writeFile(large, randomBytes(9 * MiB))
    await writeFile(small, randomBytes(1000))
    // The request that makes the object exist: PutObject, or CompleteMultipartUpload.
    const completing = (requests: RecordedRequest[]) =>
      requests.filter((r) => (r.method === 'PUT' && !/uploadId=/.test(r.url)) || (r.method === 'POST' && /uploadId=/.test(r.url)))
    for (const [file, key] of [[small, 'no-clobber/small'], [large, 'no-clobber/large']] as const) {
      for (const flags of [['--no-overwrite'], []]) {
        const since = proxy.requests.length
        const result = await runCli(['-e', '-i', file, '-o', `s3://${BUCKET}/${key}${flags.length ? '' : '-plain'}`, ...flags, ...wrap, '-S'])
        expect(result.code, result.stderr).toBe(0)
        const [request, ...more] = completing(requestsFor(`${key}${flags.length ? '' : '-plain'}`, since))
        expect(more).toEqual([])
        expect(request!.headers['if-none-match'], `${key} ${flags.join(' ')}`).toBe(flags.length ? '*' : undefined)
      }
    }
    // Another writer created the key after the HEAD check: S3 answers the conditional write with 412.
    proxy.faults.objectExists = true
    try {
      for (const [file, key] of [[small, 'no-clobber/raced-small'], [large, 'no-clobber/raced-large']] as const) {
        const since = proxy.requests.length
        const raced = await runCli(['-e', '-i', file, '-o', `s3://${BUCKET}/${key}`, '--no-overwrite', ...wrap, '-S'])
        expect(raced.code, raced.stderr).toBe(1)
        expect(raced.stderr).toContain(`output s3://${BUCKET}/${key} already exists (not overwritten)`)
        expect(await headObject(key)).toBeUndefined()
        if (file === large) expect(requestsFor(key, since).filter((r) => r.method === 'DELETE' && /uploadId=/.test(r.url))).toHaveLength(1)
      }
    } finally {
      proxy.faults.objectExists = false
    }
  })

  it('puts the --sse, --sse-kms-key-id, --sse-c-key and --storage-class headers on the wire', async () => {
    const plain = join(work, 'sse.bin')
    const content = randomBytes(9 * MiB)
    await writeFile(plain, content)
    const upload = async (key: string, flags: string[]) => {
      const since = proxy.requests.length
      const result = await runCli(['-e', '-i', plain, '-o', `s3://${BUCKET}/sse/${key}`, '--algorithm', UNSIGNED, ...flags, ...wrap, '-S'])
      expect(result.code, result.stderr).toBe(0)
      return requestsFor(`sse/${key}`, since)
    }
    const writes = (requests: RecordedRequest[]) => requests.filter((r) => r.method === 'PUT' || (r.method === 'POST' && /[?&]uploads/.test(r.url)))

    const aes = writes(await upload('aes', ['--sse', 'AES256', '--storage-class', 'STANDARD_IA']))
    const create = aes.find((r) => r.method === 'POST')!
    expect(create.headers).toMatchObject({ 'x-amz-server-side-encryption': 'AES256', 'x-amz-storage-class': 'STANDARD_IA', 'x-amz-meta-envcrypt-format': 'aws-encryption-sdk-message' })
    expect(create.headers['x-amz-acl']).toBeUndefined()

    const kmsKey = 'arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab'
    const kms = writes(await upload('kms', ['--sse', 'aws:kms', '--sse-kms-key-id', kmsKey]))
    expect(kms.find((r) => r.method === 'POST')!.headers).toMatchObject({ 'x-amz-server-side-encryption': 'aws:kms', 'x-amz-server-side-encryption-aws-kms-key-id': kmsKey })

    const customerKey = randomBytes(32)
    const customerKeyFile = join(work, 'ssec.key')
    await writeFile(customerKeyFile, customerKey, { mode: 0o600 })
    const ssecHeaders = {
      'x-amz-server-side-encryption-customer-algorithm': 'AES256',
      'x-amz-server-side-encryption-customer-key': customerKey.toString('base64'),
      'x-amz-server-side-encryption-customer-key-md5': createHash('md5').update(customerKey).digest('base64'),
    }
    const ssec = writes(await upload('ssec', ['--sse-c-key', `fileb://${customerKeyFile}`]))
    expect(ssec.length).toBe(3) // CreateMultipartUpload and two parts: S3 wants the key on every part
    for (const request of ssec) expect(request.headers).toMatchObject(ssecHeaders)
    expect(ssec[0].headers['x-amz-server-side-encryption']).toBeUndefined()

    const since = proxy.requests.length
    const back = await runCli(['-d', '-i', `s3://${BUCKET}/sse/ssec`, '-o', '-', '--sse-c-key', `fileb://${customerKeyFile}`, ...wrap, '-S'])
    expect(back.code, back.stderr).toBe(0)
    expect(back.stdout.equals(content)).toBe(true)
    const reads = requestsFor('sse/ssec', since)
    expect(reads.map((r) => r.method).sort()).toEqual(['GET', 'HEAD'])
    for (const request of reads) expect(request.headers).toMatchObject(ssecHeaders)

    for (const [flags, message] of [
      [['--sse', 'AES-256'], '--sse must be one of'],
      [['--sse-kms-key-id', kmsKey], '--sse-kms-key-id needs --sse aws:kms'],
      [['--sse', 'AES256', '--sse-c-key', `fileb://${customerKeyFile}`], 'exclude each other'],
      [['--sse-c-key', `fileb://${keyFile}x`], 'cannot read'],
      [['--sse-c-key', customerKeyFile], 'fileb://'],
      [['--storage-class', 'COLD'], '--storage-class must be one of'],
    ] as Array<[string[], string]>) {
      const refused = await runCli(['-e', '-i', plain, '-o', `s3://${BUCKET}/sse/refused`, ...flags, ...wrap, '-S'])
      expect(refused.code, flags.join(' ')).toBe(2)
      expect(refused.stderr).toContain(message)
    }
  })

  it('retries throttling (503 SlowDown) and resumes a download cut mid-body', async () => {
    const source = join(work, 'faults-src')
    const files: Record<string, Buffer> = { 'large.bin': randomBytes(12 * MiB) }
    for (let i = 0; i < 20; i++) files[`small-${i}.txt`] = randomBytes(1000 + i)
    await writeFiles(source, files)
    proxy.faults.throttleRate = 0.2
    proxy.faults.injected = 0
    try {
      const encrypted = await runCli(['-e', '-r', '-i', source, '-o', `s3://${BUCKET}/faults/`, '--algorithm', UNSIGNED, ...wrap, '-S'])
      expect(encrypted.code, encrypted.stderr).toBe(0)
      const output = join(work, 'faults-out')
      proxy.faults.cutBodies = 1
      const since = proxy.requests.length
      const decrypted = await runCli(['-d', '-r', '-i', `s3://${BUCKET}/faults/`, '-o', output, '--suffix', ...wrap, '-S'])
      expect(decrypted.code, decrypted.stderr).toBe(0)
      expect(proxy.faults.cutBodies).toBe(0)
      // The cut body was resumed, not restarted: a ranged GET from a later offset, pinned to the object's ETag.
      const gets = requestsFor('faults/large.bin.encrypted', since).filter((r) => r.method === 'GET')
      const resumed = gets.filter((r) => /^bytes=[1-9]\d*-$/.test(String(r.headers.range ?? '')))
      expect(resumed.length, JSON.stringify(gets.map((r) => r.headers.range ?? null))).toBeGreaterThanOrEqual(1)
      const etag = (await headObject('faults/large.bin.encrypted'))!.ETag
      for (const request of resumed) expect(request.headers['if-match']).toBe(etag)
      expect(proxy.faults.injected).toBeGreaterThan(5)
      const expected = Object.fromEntries(Object.entries(hashes(files)).map(([name, hash]) => [`${name}.encrypted`, hash]))
      expect(await readTree(output)).toEqual(expected)
    } finally {
      proxy.faults.throttleRate = 0
      proxy.faults.cutBodies = 0
    }
  })
})
