// The bench report: a self-contained page whose charts draw in a real browser with no network.
import { describe, expect, it } from 'vitest'
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { renderBenchReport } from '../src/bench/report.js'
import { ROOT, runCli, tempDir } from './helpers/cli.js'

/** Where the browser test leaves its screenshot for a person to look at (ignored by git). */
const ARTIFACTS = join(ROOT, 'test-artifacts')

const CHROMIUM = '/usr/bin/chromium'
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']

const caching = { capacity: 1, max_age: 10, max_messages_encrypted: 100 }
const SAMPLE_BENCH = {
  files: 200,
  file_size: 5_120_000,
  latency_ms: 10,
  runs: [
    { mode: 'encrypt', caching: false, seconds: 3.9, mb_per_s: 262.6, files_per_s: 51.3, kms_calls: { GenerateDataKey: 200 }, distinct_data_keys: 200, peak_rss_mb: 180 },
    { mode: 'encrypt', caching, seconds: 3.1, mb_per_s: 330.3, files_per_s: 64.5, kms_calls: { GenerateDataKey: 2 }, distinct_data_keys: 2, peak_rss_mb: 175 },
    { mode: 'decrypt', caching: false, seconds: 3.5, mb_per_s: 292.6, files_per_s: 57.1, kms_calls: { Decrypt: 200 }, distinct_data_keys: 200, peak_rss_mb: 170 },
    { mode: 'decrypt', caching, seconds: 3.0, mb_per_s: 341.3, files_per_s: 66.7, kms_calls: { Decrypt: 2 }, distinct_data_keys: 2, peak_rss_mb: 168 },
  ],
  reference: { aes_256_gcm_mb_per_s: 2000, sha384_mb_per_s: 650, ecdsa_p384_signs_per_s: 600 },
}

const require = createRequire(import.meta.url)
const installed = (name: string) => {
  try {
    require.resolve(name)
    return true
  } catch {
    return false
  }
}
const hasChartJs = installed('chart.js')
if (!hasChartJs) console.warn('report.test: chart.js is not installed (npm install chart.js); the browser tests are skipped')

describe('renderBenchReport', () => {
  it('embeds the data and the chart library: no script, style or image is fetched from anywhere', () => {
    const html = renderBenchReport(SAMPLE_BENCH, { chartJsSource: '/* chart library */' })
    expect(html).toContain('/* chart library */')
    expect(html).not.toMatch(/<(script|img|iframe)[^>]+src=|<link[^>]+href=/i)
    expect(html).toContain('encrypt, caching')
    expect(html).toContain('GenerateDataKey=200')
  })

  it('keeps text that looks like markup inert', () => {
    const bench = { ...SAMPLE_BENCH, host: '<img src=x onerror=alert(1)>', runs: [{ ...SAMPLE_BENCH.runs[0], mode: '</script><script>alert(1)</script>' }] }
    const html = renderBenchReport(bench, { chartJsSource: '' })
    expect(html).not.toContain('<img src=x')
    expect(html).not.toContain('</script><script>alert(1)')
  })

  it('refuses JSON that is not a bench result, saying what it expected', () => {
    expect(() => renderBenchReport({ files_ok: 3 }, { chartJsSource: '' })).toThrow(/expected a JSON object with a "runs" array/)
    expect(() => renderBenchReport({ runs: [{ mode: 'encrypt' }] }, { chartJsSource: '' })).toThrow(/run #1 lacks mode, seconds or mb_per_s/)
  })
})

const browserSkipReason = !hasChartJs ? ' (skipped: chart.js is not installed)' : !existsSync(CHROMIUM) ? ` (skipped: ${CHROMIUM} is not installed; .ci/run installs it)` : ''
describe.skipIf(browserSkipReason !== '')(`the report in headless Chromium${browserSkipReason}`, () => {
  async function writeReport(): Promise<string> {
    const dir = tempDir()
    writeFileSync(join(dir, 'bench.json'), JSON.stringify(SAMPLE_BENCH))
    const result = await runCli(['report', '--from', join(dir, 'bench.json'), '--out', join(dir, 'bench.html')])
    expect(result.code).toBe(0)
    return join(dir, 'bench.html')
  }

  const playwrightSkipReason = installed('playwright-core') ? '' : ' (skipped: playwright-core is not installed)'
  it.skipIf(playwrightSkipReason !== '')(`draws four non-empty charts with no console error and no network request${playwrightSkipReason}`, async () => {
    const page = await writeReport()
    const { chromium } = require('playwright-core') as typeof import('playwright-core')
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS })
    try {
      const tab = await browser.newPage({ viewport: { width: 1200, height: 1400 } })
      const problems: string[] = []
      tab.on('console', (message) => message.type() === 'error' && problems.push(message.text()))
      tab.on('pageerror', (error) => problems.push(error.message))
      tab.on('request', (request) => !request.url().startsWith('file:') && problems.push(`network: ${request.url()}`))
      await tab.goto(pathToFileURL(page).href)
      await tab.waitForFunction(() => document.body.dataset.chartsRendered === '4', undefined, { timeout: 10_000 })
      const canvases = await tab.$$eval('canvas', (nodes) => nodes.map((c) => ({ id: c.id, width: (c as HTMLCanvasElement).width, height: (c as HTMLCanvasElement).height })))
      expect(canvases.map((c) => c.id)).toEqual(['chart-seconds', 'chart-throughput', 'chart-kms', 'chart-data-keys'])
      for (const canvas of canvases) {
        expect(canvas.width).toBeGreaterThan(100)
        expect(canvas.height).toBeGreaterThan(100)
      }
      // Something was painted: a blank canvas has one colour only.
      const colours = await tab.$eval('#chart-seconds', (c) => {
        const data = (c as HTMLCanvasElement).getContext('2d')!.getImageData(0, 0, (c as HTMLCanvasElement).width, (c as HTMLCanvasElement).height).data
        const seen = new Set<number>()
        for (let i = 0; i < data.length; i += 4 * 97) seen.add((data[i] << 24) | (data[i + 1] << 16) | (data[i + 2] << 8) | data[i + 3])
        return seen.size
      })
      expect(colours).toBeGreaterThan(3)
      // The log axes start below 1, every bar of 1 or more is visible, and each bar's value is written.
      const charts = await tab.evaluate(() => ['chart-kms', 'chart-data-keys'].map((id) => {
        const chart = (window as any).Chart.getChart(document.getElementById(id))
        const bars = chart.data.datasets.flatMap((dataset: any, d: number) =>
          chart.getDatasetMeta(d).data.map((element: any, i: number) => ({ value: dataset.data[i], height: Math.abs(element.base - element.y) })))
        return { id, min: chart.scales.y.min, type: chart.scales.y.type, bars }
      }))
      for (const chart of charts) {
        expect(chart.type, chart.id).toBe('logarithmic')
        expect(chart.min, chart.id).toBeLessThan(1)
        for (const bar of chart.bars.filter((b: { value: number }) => b.value >= 1)) expect(bar.height, `${chart.id} bar of ${bar.value}`).toBeGreaterThanOrEqual(4)
      }
      const labelled = await tab.evaluate(() => Number(document.body.dataset.valueLabels))
      const barCount = await tab.evaluate(() => ['chart-seconds', 'chart-throughput', 'chart-kms', 'chart-data-keys']
        .map((id) => (window as any).Chart.getChart(document.getElementById(id)).data.datasets.reduce((n: number, d: any) => n + d.data.length, 0))
        .reduce((a: number, b: number) => a + b, 0))
      expect(labelled).toBe(barCount)
      // Table headings in words with units, not JSON field names.
      const headings = await tab.$$eval('#parameters th, #runs th', (cells) => cells.map((c) => c.textContent))
      expect(headings).toEqual(expect.arrayContaining(['file size', 'KMS latency', 'throughput', 'peak memory']))
      expect(headings.join(' ')).not.toMatch(/_/)
      expect(await tab.$eval('#parameters', (t) => t.textContent)).toContain('5.1 MB')
      mkdirSync(ARTIFACTS, { recursive: true })
      await tab.screenshot({ path: join(ARTIFACTS, 'bench-report.png'), fullPage: true })
      expect(problems).toEqual([])
    } finally {
      await browser.close()
    }
  })

  it('renders with chromium --dump-dom alone (no driver needed)', async () => {
    const page = await writeReport()
    const dom = execFileSync(CHROMIUM, [...CHROMIUM_ARGS, '--dump-dom', pathToFileURL(page).href], { encoding: 'utf8', timeout: 60_000, stdio: ['ignore', 'pipe', 'ignore'] })
    expect(dom).toMatch(/<body[^>]*data-charts-rendered="4"/)
    expect(readFileSync(page, 'utf8').length).toBeGreaterThan(150_000)
  })
})
