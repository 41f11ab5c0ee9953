// Sharding and manifests: deterministic shares of the work for independent workers.
import { describe, expect, it } from 'vitest'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import fc from 'fast-check'
import { createHash } from 'node:crypto'
import { parseManifest, parseShard, shardOf } from '../src/store/shard.js'
import { listFiles, rawAesKey, runCli, tempDir, writeTree } from './helpers/cli.js'

describe('shardOf', () => {
  it('is the documented hash: first 8 bytes of SHA-256 of the path, big-endian, modulo N', () => {
    const expected = Number(createHash('sha256').update('a/b.txt').digest().readBigUInt64BE(0) % 7n)
    expect(shardOf('a/b.txt', 7)).toBe(expected)
  })

  it('splits into disjoint shards covering everything, stable when files are added', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.string({ minLength: 1 }), { minLength: 1, maxLength: 60 }), fc.array(fc.string({ minLength: 1 }), { maxLength: 20 }), fc.integer({ min: 1, max: 9 }), (paths, added, count) => {
        const before = new Map(paths.map((p) => [p, shardOf(p, count)]))
        for (const shard of before.values()) expect(shard).toBeGreaterThanOrEqual(0)
        for (const shard of before.values()) expect(shard).toBeLessThan(count)
        const after = new Map([...paths, ...added].map((p) => [p, shardOf(p, count)]))
        for (const [path, shard] of before) expect(after.get(path)).toBe(shard)
      }),
    )
  })
})

describe('parseShard', () => {
  it('reads I/N, scheduler environment variables, and a named variable', () => {
    expect(parseShard({ shard: '2/4' })).toEqual({ index: 2, count: 4 })
    expect(parseShard({ shard: 'env', shardCount: 8 }, { JOB_COMPLETION_INDEX: '5' })).toEqual({ index: 5, count: 8 })
    expect(parseShard({ shard: 'env', shardCount: 3 }, { AWS_BATCH_JOB_ARRAY_INDEX: '0' })).toEqual({ index: 0, count: 3 })
    expect(parseShard({ shardIndexEnv: 'MY_INDEX', shardCount: 3 }, { MY_INDEX: '1' })).toEqual({ index: 1, count: 3 })
    expect(parseShard({})).toBeUndefined()
  })

  it('refuses what cannot be a shard, naming the flag or variable', () => {
    expect(() => parseShard({ shard: '4/4' })).toThrow(/index 4 .* below the count 4/)
    expect(() => parseShard({ shard: 'half' })).toThrow(/--shard: "half" is not I\/N/)
    expect(() => parseShard({ shard: 'env' }, {})).toThrow(/none of JOB_COMPLETION_INDEX/)
    expect(() => parseShard({ shard: 'env' }, { JOB_COMPLETION_INDEX: '1' })).toThrow(/--shard-count/)
    expect(() => parseShard({ shardIndexEnv: 'X', shardCount: 2 }, { X: 'one' })).toThrow(/\$X = "one" is not a shard index/)
  })
})

describe('parseManifest', () => {
  it('reads plain lists (comments and blank lines ignored) and S3 Inventory CSV (URL-encoded keys)', () => {
    expect(parseManifest('# work\na.txt\n\nsub/b c.txt\n', 'm').map((e) => e.path)).toEqual(['a.txt', 'sub/b c.txt'])
    const inventory = parseManifest('"bucket","data/r%C3%A9sum%C3%A9+2026.pdf","1234"\n"bucket","data/a.txt","0"\n', 'inv.csv')
    expect(inventory).toEqual([
      { path: 'data/résumé 2026.pdf', line: 1, bucket: 'bucket', size: 1234 },
      { path: 'data/a.txt', line: 2, bucket: 'bucket', size: 0 },
    ])
  })

  it('reports every malformed line with its number', () => {
    expect(() => parseManifest('ok.txt\n/etc/passwd\nfine\n../up.txt\n', 'list.txt')).toThrow(/--manifest list.txt: 2 malformed lines: line 2: .*absolute.*; line 4: .*\.\. segment/)
    expect(() => parseManifest('"b","k1"\n"b",\n"b","k3","x"\n', 'inv.csv')).toThrow(/line 2: expected "bucket","key".*line 3: size "x"/)
  })
})

describe('the CLI with --shard and --manifest', () => {
  function tree(count: number) {
    const dir = tempDir()
    const files: Record<string, string> = {}
    for (let i = 0; i < count; i++) files[`d${i % 5}/f${i}.txt`] = `file ${i}`
    writeTree(join(dir, 'in'), files)
    return { dir, key: rawAesKey(dir), files }
  }

  it('4 shards are disjoint and together exactly the whole input; merge-summaries adds them up', async () => {
    const { dir, key, files } = tree(120)
    const seen: string[] = []
    const summaries: string[] = []
    for (let i = 0; i < 4; i++) {
      const summary = join(dir, `summary-${i}.json`)
      summaries.push(summary)
      const result = await runCli(['-e', '-r', '-i', join(dir, 'in'), '-o', join(dir, 'enc'), ...key.spec, '-S', '--shard', `${i}/4`, '--summary', summary])
      expect(result.code).toBe(0)
      const count = JSON.parse(readFileSync(summary, 'utf8')).files_ok
      expect(count).toBeGreaterThan(0)
      const all = listFiles(join(dir, 'enc'))
      seen.push(...all.filter((f) => !seen.includes(f)))
      expect(all.length).toBe(seen.length)
    }
    expect(seen.sort()).toEqual(Object.keys(files).map((f) => `${f}.encrypted`).sort())
    const merged = await runCli(['merge-summaries', ...summaries])
    expect(JSON.parse(merged.stdout.toString())).toMatchObject({ files_ok: 120, files_failed: 0, workers: 4 })
  })

  it('--shard env takes the index from JOB_COMPLETION_INDEX (Kubernetes Indexed Job)', async () => {
    const { dir, key, files } = tree(40)
    const result = await runCli(['-e', '-r', '-i', join(dir, 'in'), '-o', join(dir, 'enc'), ...key.spec, '-S', '--shard', 'env', '--shard-count', '3', '--summary', '-', '-q'], { env: { JOB_COMPLETION_INDEX: '1' } })
    expect(result.code).toBe(0)
    const expected = Object.keys(files).filter((f) => shardOf(f, 3) === 1)
    expect(listFiles(join(dir, 'enc'))).toEqual(expected.map((f) => `${f}.encrypted`).sort())
  })

  it('--manifest processes only the listed files; a listed file that is missing fails alone', async () => {
    const { dir, key } = tree(10)
    writeFileSync(join(dir, 'work.txt'), '# this worker\nd1/f1.txt\nd2/f2.txt\nd3/missing.txt\n')
    const result = await runCli(['-e', '-i', join(dir, 'in'), '-o', join(dir, 'enc'), ...key.spec, '-S', '--manifest', join(dir, 'work.txt')])
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(/missing\.txt: listed in the manifest \(line 4\)/)
    expect(listFiles(join(dir, 'enc'))).toEqual(['d1/f1.txt.encrypted', 'd2/f2.txt.encrypted'])
  })

  it('a malformed manifest is refused up front with line numbers; nothing is written', async () => {
    const { dir, key } = tree(3)
    writeFileSync(join(dir, 'bad.txt'), 'd0/f0.txt\n../../etc/passwd\n')
    const result = await runCli(['-e', '-i', join(dir, 'in'), '-o', join(dir, 'enc'), ...key.spec, '-S', '--manifest', join(dir, 'bad.txt')])
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/line 2: .*\.\. segment/)
    expect(listFiles(dir).some((f) => f.startsWith('enc'))).toBe(false)
  })
})
