// Issue 8 end to end: independent workers, each with its own shard, against s3rver over 2,000 objects.
// The prefix is flat: s3rver 3.7.1 drops keys from nested listings past 1,000 (FACTS.md).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawn } from 'node:child_process'
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createHash, randomBytes } from 'node:crypto'
import { CLI, listFiles, rawAesKey, runCli, tempDir, writeTree } from './helpers/cli.js'
import { startS3rver, S3RVER_ENV, type S3rverHandle } from './helpers/s3rver.js'

const BUCKET = 'shards'
const OBJECTS = 2000
let server: S3rverHandle
let env: Record<string, string>
let work: string
let key: ReturnType<typeof rawAesKey>
const plaintexts: Record<string, Buffer> = {}

beforeAll(async () => {
  server = await startS3rver([BUCKET])
  work = tempDir()
  env = { ...S3RVER_ENV, AWS_ENDPOINT_URL_S3: server.endpoint, AWS_CONFIG_FILE: join(work, 'none'), AWS_SHARED_CREDENTIALS_FILE: join(work, 'none') }
  key = rawAesKey(work)
  for (let i = 0; i < OBJECTS; i++) plaintexts[`obj-${String(i).padStart(4, '0')}.txt`] = randomBytes(64 + (i % 200))
  writeTree(join(work, 'plain'), plaintexts)
  const upload = await runCli(['-e', '-r', '-i', join(work, 'plain'), '-o', `s3://${BUCKET}/data/`, ...key.spec, '-S', '-q', '-j', '16'], { env })
  expect(upload.stderr).toBe('')
  expect(upload.code).toBe(0)
}, 300_000)
afterAll(() => server?.stop())

/** docs/SCALE.md's shard of a path relative to the input prefix. */
const documentedShard = (path: string, count: number) => Number(createHash('sha256').update(path, 'utf8').digest().readBigUInt64BE(0) % BigInt(count))

const decryptArgs = (out: string, extra: string[] = []) => ['-d', '-r', '-i', `s3://${BUCKET}/data/`, '-o', out, '--suffix', ...key.spec, '-S', '-q', '-j', '8', ...extra]

describe('4 workers with --shard 0/4 .. 3/4', () => {
  it('process every object exactly once; outputs byte-identical to a single-worker run', async () => {
    const single = join(work, 'single')
    expect((await runCli(decryptArgs(single), { env })).code).toBe(0)
    const sharded = join(work, 'sharded')
    const results = await Promise.all(
      [0, 1, 2, 3].map((i) => runCli(decryptArgs(sharded, ['--shard', `${i}/4`, '--summary', join(work, `summary-${i}.json`)]), { env })),
    )
    for (const result of results) expect(result.code).toBe(0)
    const counts = [0, 1, 2, 3].map((i) => JSON.parse(readFileSync(join(work, `summary-${i}.json`), 'utf8')).files_ok)
    expect(counts.reduce((a, b) => a + b, 0)).toBe(OBJECTS)
    for (const count of counts) expect(count).toBeGreaterThan(OBJECTS / 8)
    const names = listFiles(single)
    expect(names).toHaveLength(OBJECTS)
    expect(listFiles(sharded)).toEqual(names)
    for (const name of names) {
      const bytes = readFileSync(join(sharded, name))
      expect(bytes.equals(readFileSync(join(single, name)))).toBe(true)
      expect(bytes.equals(plaintexts[name.replace(/\.encrypted$/, '')])).toBe(true)
    }
    const merged = await runCli(['merge-summaries', ...[0, 1, 2, 3].map((i) => join(work, `summary-${i}.json`))])
    expect(JSON.parse(merged.stdout.toString())).toMatchObject({ files_ok: OBJECTS, files_failed: 0, workers: 4 })
  })

  it('a worker killed mid-run and re-run with --skip-existing completes its share without redoing finished files', async () => {
    const out = join(work, 'killed')
    const args = decryptArgs(out, ['--shard', '2/4']).map((a) => (a === '8' ? '2' : a))
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'inherit'] })
    // Kill once some outputs exist, so the share is partly done.
    await new Promise<void>((resolve) => {
      const poll = setInterval(() => {
        if (existsSync(out) && readdirSync(out).filter((f) => !f.startsWith('.')).length >= 20) {
          clearInterval(poll)
          child.kill('SIGKILL')
          resolve()
        }
      }, 20)
      child.once('exit', () => {
        clearInterval(poll)
        resolve()
      })
    })
    await new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve(null) : child.once('exit', resolve)))
    const done = listFiles(out).filter((f) => !f.includes('.envcrypt-tmp-'))
    // Every output at a final path is complete: it equals its plaintext.
    for (const name of done) expect(readFileSync(join(out, name)).equals(plaintexts[name.replace(/\.encrypted$/, '')])).toBe(true)
    // Shard 2's share, from the documented formula (not from another test's summary: tests may run alone).
    const share = Object.keys(plaintexts).filter((name) => documentedShard(`${name}.encrypted`, 4) === 2).length
    expect(share).toBeGreaterThan(0)
    // The kill landed mid-run: part of the share was done, part was not.
    expect(done.length).toBeGreaterThan(0)
    expect(done.length).toBeLessThan(share)
    const rerun = await runCli([...args, '--skip-existing', '--summary', '-'], { env })
    expect(rerun.code).toBe(0)
    const summary = JSON.parse(rerun.stdout.toString())
    expect(summary.files_skipped).toBe(done.length)
    expect(summary.files_ok + summary.files_skipped).toBe(share)
    expect(listFiles(out).filter((f) => !f.includes('.envcrypt-tmp-'))).toHaveLength(share)
  })

  it('--manifest s3://...: an S3 Inventory CSV stored in the bucket names the work; rows outside the prefix are ignored', async () => {
    const names = ['obj-0001.txt.encrypted', 'obj-0002.txt.encrypted', 'obj-1999.txt.encrypted']
    const rows = names.map((name) => `"${BUCKET}","data/${name}","100"`)
    rows.push(`"${BUCKET}","elsewhere/x.txt","1"`)
    writeFileSync(join(work, 'inventory.csv'), rows.join('\n') + '\n')
    const put = await runCli(['-e', '-i', join(work, 'inventory.csv'), '-o', `s3://${BUCKET}/inventory/report.csv`, ...key.spec, '-S', '-q'], { env })
    expect(put.stderr).toBe('')
    // The manifest itself must be plaintext: store an unencrypted copy through the decrypt path.
    expect((await runCli(['-d', '-i', `s3://${BUCKET}/inventory/report.csv`, '-o', `s3://${BUCKET}/inventory/plain.csv`, ...key.spec, '-S', '-q'], { env })).code).toBe(0)
    const out = join(work, 'from-manifest')
    const result = await runCli(['-d', '-i', `s3://${BUCKET}/data/`, '-o', out, '--suffix', ...key.spec, '-S', '--manifest', `s3://${BUCKET}/inventory/plain.csv`], { env })
    expect(result.stderr).not.toMatch(/error/)
    expect(result.code).toBe(0)
    expect(result.stderr).toMatch(/1 inventory row\(s\) outside/)
    expect(listFiles(out)).toEqual(names)
  })
})
