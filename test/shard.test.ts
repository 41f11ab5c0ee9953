// Sharding and manifests: deterministic shares of the work for independent workers.
import { describe, expect, it } from 'vitest'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import fc from 'fast-check'
import { createHash } from 'node:crypto'
import { parseManifest, parseShard, shardOf } from '../src/store/shard.js'
import { listFiles, rawAesKey, runCli, tempDir, writeTree } from './helpers/cli.js'

/** The formula docs/SCALE.md documents, written out here rather than imported: the first 8 bytes of SHA-256 of the
 *  relative path (UTF-8), big-endian, modulo the shard count. */
const documentedShard = (path: string, count: number) => Number(createHash('sha256').update(path, 'utf8').digest().readBigUInt64BE(0) % BigInt(count))

describe('shardOf', () => {
  it('is the documented hash: first 8 bytes of SHA-256 of the path, big-endian, modulo N (random paths and counts)', () => {
    expect(shardOf('a/b.txt', 7)).toBe(documentedShard('a/b.txt', 7))
    fc.assert(
      fc.property(fc.string({ minLength: 1, unit: 'grapheme' }), fc.integer({ min: 1, max: 1000 }), (path, count) => {
        expect(shardOf(path, count)).toBe(documentedShard(path, count))
      }),
      { numRuns: 500 },
    )
  })

  it('balances: 4,000 paths over 4 and 7 shards give every shard within 15% of its fair share', () => {
    const paths = Array.from({ length: 4000 }, (_, i) => `d${i % 13}/file-${i}.bin`)
    for (const count of [4, 7]) {
      const sizes = new Array<number>(count).fill(0)
      for (const path of paths) sizes[shardOf(path, count)]++
      for (const size of sizes) expect(Math.abs(size - paths.length / count)).toBeLessThan(0.15 * (paths.length / count))
    }
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

  it('4 shards, each written to its own directory: pairwise disjoint, together exactly the input, each the documented share; merge-summaries adds them up', async () => {
    const { dir, key, files } = tree(120)
    const shards: string[][] = []
    const summaries: string[] = []
    for (let i = 0; i < 4; i++) {
      const summary = join(dir, `summary-${i}.json`)
      summaries.push(summary)
      const result = await runCli(['-e', '-r', '-i', join(dir, 'in'), '-o', join(dir, `enc-${i}`), ...key.spec, '-S', '--shard', `${i}/4`, '--summary', summary])
      expect(result.code).toBe(0)
      const written = listFiles(join(dir, `enc-${i}`)).map((f) => f.replace(/\.encrypted$/, ''))
      expect(written.length).toBeGreaterThan(0)
      expect(written).toEqual(Object.keys(files).filter((f) => documentedShard(f, 4) === i).sort())
      expect(JSON.parse(readFileSync(summary, 'utf8')).files_ok).toBe(written.length)
      shards.push(written)
    }
    for (let a = 0; a < 4; a++) for (let b = a + 1; b < 4; b++) expect(shards[a].filter((f) => shards[b].includes(f)), `shards ${a} and ${b}`).toEqual([])
    expect(shards.flat().sort()).toEqual(Object.keys(files).sort())
    const merged = await runCli(['merge-summaries', ...summaries])
    expect(JSON.parse(merged.stdout.toString())).toMatchObject({ files_ok: 120, files_failed: 0, workers: 4 })
  })

  it('--shard env takes the index from JOB_COMPLETION_INDEX (Kubernetes Indexed Job)', async () => {
    const { dir, key, files } = tree(40)
    const result = await runCli(['-e', '-r', '-i', join(dir, 'in'), '-o', join(dir, 'enc'), ...key.spec, '-S', '--shard', 'env', '--shard-count', '3', '--summary', '-', '-q'], { env: { JOB_COMPLETION_INDEX: '1' } })
    expect(result.code).toBe(0)
    const expected = Object.keys(files).filter((f) => documentedShard(f, 3) === 1)
    expect(listFiles(join(dir, 'enc'))).toEqual(expected.map((f) => `${f}.encrypted`).sort())
  })

  it('--shard env reads AWS_BATCH_JOB_ARRAY_INDEX (AWS Batch array job); --shard-index-env NAME reads $NAME', async () => {
    const { dir, key, files } = tree(40)
    const runs: Array<[string, string[], Record<string, string>, number]> = [
      ['batch', ['--shard', 'env', '--shard-count', '3'], { AWS_BATCH_JOB_ARRAY_INDEX: '0' }, 0],
      ['named', ['--shard-index-env', 'MY_WORKER', '--shard-count', '3'], { MY_WORKER: '2' }, 2],
    ]
    for (const [name, flags, env, index] of runs) {
      const result = await runCli(['-e', '-r', '-i', join(dir, 'in'), '-o', join(dir, name), ...key.spec, '-S', '-q', ...flags], { env })
      expect(result.code, result.stderr).toBe(0)
      const expected = Object.keys(files).filter((f) => documentedShard(f, 3) === index)
      expect(expected.length).toBeGreaterThan(0)
      expect(listFiles(join(dir, name))).toEqual(expected.map((f) => `${f}.encrypted`).sort())
    }
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
