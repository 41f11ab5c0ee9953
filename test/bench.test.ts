// `envcrypt bench` at a small size: the JSON shape, and that caching cut the GenerateDataKey calls as the
// settings say. No timing assertions: the figures belong in the bench itself.
import { describe, expect, it, vi } from 'vitest'
import { readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { CLI, rawAesKey, runCli, tempDir } from './helpers/cli.js'

// Each test runs the CLI six to twelve times (encrypt, decrypt, verify); on the shared 2-core machine the first
// took over 60 s.
vi.setConfig({ testTimeout: 240_000 })

describe('envcrypt bench', () => {
  it('--files 20 --file-size 10000 --json: six runs (encrypt, decrypt, verify; round trips checked); caching at max_messages_encrypted=10 makes 2 data keys', async () => {
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
      'aes_256_gcm_mb_per_s', 'cores', 'cpu', 'ecdsa_p384_key_pairs_per_s_all_cores', 'ecdsa_p384_signs_per_s', 'ecdsa_p384_signs_per_s_all_cores',
      'ecdsa_p384_verifies_per_s_all_cores', 'io_floor_seconds', 'sha384_mb_per_s',
    ])
    for (const field of ['ecdsa_p384_signs_per_s', 'ecdsa_p384_key_pairs_per_s_all_cores', 'ecdsa_p384_signs_per_s_all_cores', 'ecdsa_p384_verifies_per_s_all_cores', 'io_floor_seconds']) {
      expect(report.reference[field], field).toBeGreaterThan(0)
    }
    expect(report.baselines).toEqual([])
    const settings = { capacity: 1, max_age: 10, max_messages_encrypted: 10 }
    expect(report.runs.map((r: any) => [r.mode, r.caching])).toEqual([
      ['encrypt', false],
      ['decrypt', false],
      ['verify', false],
      ['encrypt', settings],
      ['decrypt', settings],
      ['verify', settings],
    ])
    for (const run of report.runs) {
      for (const field of ['seconds', 'mb_per_s', 'files_per_s', 'peak_rss_mb']) expect(typeof run[field], field).toBe('number')
      expect(run.seconds).toBeGreaterThan(0)
      expect(run.peak_rss_mb).toBeGreaterThan(0)
      // The limit counts the I/O floor and the run's crypto work; the share is limit over wall time.
      expect(run.limit_seconds).toBeGreaterThan(report.reference.io_floor_seconds)
      expect(run.share_of_limit).toBeCloseTo(run.limit_seconds / run.seconds, 2)
      expect(run).not.toHaveProperty('baseline_ratio')
    }
    const [encrypt, decrypt, verify, cachedEncrypt, cachedDecrypt, cachedVerify] = report.runs
    expect(encrypt.kms_calls).toEqual({ GenerateDataKey: 20 })
    expect(encrypt.distinct_data_keys).toBe(20)
    expect(decrypt.kms_calls).toEqual({ Decrypt: 20 })
    expect(cachedEncrypt.kms_calls).toEqual({ GenerateDataKey: 2 })
    expect(cachedEncrypt.distinct_data_keys).toBe(2)
    expect(cachedDecrypt.kms_calls).toEqual({ Decrypt: 2 })
    // verify authenticates the same messages: the same KMS calls as decrypt.
    expect(verify.kms_calls).toEqual({ Decrypt: 20 })
    expect(cachedVerify.kms_calls).toEqual({ Decrypt: 2 })
    expect(cachedVerify.distinct_data_keys).toBe(2)
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
    expect(table.match(/^\s+(encrypt|decrypt|verify) /gm)).toHaveLength(12)
    expect(table).toMatch(/sdk caching/)
    expect(table).toMatch(/ECDSA P-384 \d+ signs\/s/)
  })

  it('the table prints the machine limit measured in the run and each run\'s share of it; --shape one-file', async () => {
    const result = await runCli(['bench', '--shape', 'one-file', '--latency-ms', '0', '--no-caching-runs'])
    expect(result.code).toBe(0)
    const table = result.stdout.toString()
    expect(table).toMatch(/^envcrypt bench: 1 files x 1 B/)
    expect(table).toMatch(/I\/O floor \d+\.\d+ s \(one-process copy/)
    expect(table).toMatch(/all \d+ cores at once: ECDSA P-384 \d+ key pairs\/s, \d+ signs\/s, \d+ verifies\/s/)
    // Without caching runs: one encrypt and one decrypt, each with its limit and share.
    expect(table.match(/^\s+(encrypt|decrypt) .* s +\d+%$/gm)).toHaveLength(2)
  })

  it('--baseline-encrypt/--baseline-decrypt: a correct tool is verified and compared; its time is best of --repeat', async () => {
    const work = tempDir()
    const key = rawAesKey(work)
    const keyWords = key.spec.join(' ')
    const tool = `${process.execPath} ${CLI}`
    const result = await runCli(['bench', '--files', '4', '--file-size', '3000', '--no-caching-runs', '--repeat', '2', '--json', ...key.spec,
      '--baseline-encrypt', `${tool} -e -r -i {input} -o {output} ${keyWords} -S -q`,
      '--baseline-decrypt', `${tool} -d -r -i {input} -o {output} ${keyWords} -S -q`])
    expect(result.stderr).toBe('')
    expect(result.code).toBe(0)
    const report = JSON.parse(result.stdout.toString())
    expect(report.latency_ms).toBe(null)
    expect(report.runs.map((r: any) => r.mode)).toEqual(['encrypt', 'decrypt', 'verify', 'encrypt', 'decrypt', 'verify'])
    expect(report.runs.every((r: any) => Object.keys(r.kms_calls).length === 0)).toBe(true)
    expect(report.baselines.map((b: any) => [b.mode, b.verified])).toEqual([['encrypt', true], ['decrypt', true]])
    // verify has no counterpart in the baseline tool, so no ratio.
    expect(report.runs.filter((r: any) => r.mode === 'verify').every((r: any) => !('baseline_ratio' in r))).toBe(true)
    for (const run of report.runs.filter((r: any) => r.mode !== 'verify')) {
      const baseline = report.baselines.find((b: any) => b.mode === run.mode)
      expect(run.baseline_ratio).toBeCloseTo(baseline.seconds / run.seconds, 1)
    }
  })

  it('a baseline that writes the wrong bytes fails verification: reported, no ratio, exit 1', async () => {
    const work = tempDir()
    const key = rawAesKey(work)
    // Copies instead of encrypting or decrypting: plaintext as "messages", messages as "plaintext".
    const result = await runCli(['bench', '--files', '3', '--file-size', '2000', '--no-caching-runs', '--unsigned', '--json', ...key.spec,
      '--baseline-encrypt', 'cp -r {input}/. {output}', '--baseline-decrypt', 'cp -r {input}/. {output}'])
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(/baseline encrypt failed verification \(envcrypt cannot decrypt what it wrote/)
    expect(result.stderr).toMatch(/decrypt failed verification \(file-0\.bin differs from file-0\.bin\)/)
    const report = JSON.parse(result.stdout.toString())
    expect(report.baselines.map((b: any) => [b.mode, b.verified])).toEqual([['encrypt', false], ['decrypt', false]])
    expect(report.runs.some((r: any) => 'baseline_ratio' in r)).toBe(false)
  })

  it('a baseline template without {input} or {output} is a usage error', async () => {
    const result = await runCli(['bench', '--files', '1', '--baseline-encrypt', 'cp -r data out'])
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/must contain \{input\} and \{output\}/)
  })

  it('refuses bad sizes with a usage error', async () => {
    const result = await runCli(['bench', '--files', '0'])
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/--files/)
  })
})
