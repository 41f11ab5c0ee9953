// `envcrypt bench` at a small size: the JSON shape, and that caching cut the GenerateDataKey calls as the
// settings say. No timing assertions: the figures belong in the bench itself.
import { describe, expect, it } from 'vitest'
import { readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { runCli, tempDir } from './helpers/cli.js'

describe('envcrypt bench', () => {
  it('--files 20 --file-size 10000 --json: four verified runs; caching at max_messages_encrypted=10 makes 2 data keys', async () => {
    const work = tempDir()
    const dir = join(work, 'dataset')
    const html = join(work, 'bench.html')
    const result = await runCli(['bench', '--files', '20', '--file-size', '10000', '--latency-ms', '1', '--dir', dir,
      '--caching', 'capacity=1', 'max_age=10', 'max_messages_encrypted=10', '--json', '--report', html])
    expect(result.stderr).toBe('')
    expect(result.code).toBe(0)
    const report = JSON.parse(result.stdout.toString())
    expect(report).toMatchObject({ files: 20, file_size: 10000, bytes: 200000, latency_ms: 1 })
    expect(Object.keys(report.reference).sort()).toEqual([
      'aes_256_gcm_mb_per_s', 'cores', 'cpu', 'ecdsa_p384_signs_per_s', 'ecdsa_p384_signs_per_s_all_cores', 'sha384_mb_per_s',
    ])
    for (const field of ['ecdsa_p384_signs_per_s', 'ecdsa_p384_signs_per_s_all_cores']) expect(report.reference[field], field).toBeGreaterThan(0)
    const settings = { capacity: 1, max_age: 10, max_messages_encrypted: 10 }
    expect(report.runs.map((r: any) => [r.mode, r.caching])).toEqual([
      ['encrypt', false],
      ['decrypt', false],
      ['encrypt', settings],
      ['decrypt', settings],
    ])
    for (const run of report.runs) {
      for (const field of ['seconds', 'mb_per_s', 'files_per_s', 'peak_rss_mb']) expect(typeof run[field], field).toBe('number')
      expect(run.seconds).toBeGreaterThan(0)
      expect(run.peak_rss_mb).toBeGreaterThan(0)
    }
    const [encrypt, decrypt, cachedEncrypt, cachedDecrypt] = report.runs
    expect(encrypt.kms_calls).toEqual({ GenerateDataKey: 20 })
    expect(encrypt.distinct_data_keys).toBe(20)
    expect(decrypt.kms_calls).toEqual({ Decrypt: 20 })
    expect(cachedEncrypt.kms_calls).toEqual({ GenerateDataKey: 2 })
    expect(cachedEncrypt.distinct_data_keys).toBe(2)
    expect(cachedDecrypt.kms_calls).toEqual({ Decrypt: 2 })
    // --report writes the same runs as a self-contained page (rendering is checked in test/report.test.ts).
    const page = readFileSync(html, 'utf8')
    expect(page).toMatch(/<canvas/)
    expect(page).not.toMatch(/<script[^>]+src=/)
    expect(page).toContain(JSON.stringify(report.runs[0].kms_calls).slice(1, -1))
    // --dir keeps the dataset for the next run; nothing else is left in it.
    expect(readdirSync(dir)).toHaveLength(20)
  })

  it('the table names every run and the machine reference; --unsigned and two engines', async () => {
    const result = await runCli(['bench', '--files', '3', '--file-size', '5000', '--latency-ms', '0', '--unsigned', '--engine', 'pool', 'sdk'])
    expect(result.code).toBe(0)
    const table = result.stdout.toString()
    expect(table).toMatch(/AES_256_GCM_HKDF_SHA512_COMMIT_KEY,/)
    expect(table.match(/^\s+(encrypt|decrypt) /gm)).toHaveLength(8)
    expect(table).toMatch(/sdk caching/)
    expect(table).toMatch(/ECDSA P-384 \d+ signs\/s/)
  })

  it('signed small files: the table puts each encrypt run against the all-core signing rate', async () => {
    const result = await runCli(['bench', '--files', '3', '--file-size', '4096', '--latency-ms', '0'])
    expect(result.code).toBe(0)
    const table = result.stdout.toString()
    expect(table).toMatch(/all \d+ cores at once\): ECDSA P-384 \d+ signs\/s/)
    expect(table.match(/files\/s = \d+% of it$/gm)).toHaveLength(2)
  })

  it('refuses bad sizes with a usage error', async () => {
    const result = await runCli(['bench', '--files', '0'])
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/--files/)
  })
})
