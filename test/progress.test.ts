// The terminal summary and progress bar's width (src/cli/progress.ts).
import { describe, expect, it } from 'vitest'
import { barWidth, renderEndSummary } from '../src/cli/progress.js'

const summary = { files_ok: 105, files_failed: 0, files_skipped: 0, bytes_in: 1, bytes_out: 2, seconds: 1.2, failures: [], kms_calls: {}, interrupted: 'SIGINT' }

describe('progress', () => {
  it('an interrupted run says how many files were planned, not how many finished', () => {
    expect(renderEndSummary(summary, 'encrypted', 300).split('\n')[0]).toBe('envcrypt: encrypted 105 files of 300 in 1.2s')
    expect(renderEndSummary({ ...summary, interrupted: undefined }, 'encrypted').split('\n')[0]).toBe('envcrypt: encrypted 105 files of 105 in 1.2s')
  })

  it('the bar takes what the text leaves of the terminal, at most 40 columns, and disappears before the text is cut', () => {
    expect(barWidth(200, 300, 1_000_000_000)).toBe(40)
    const at60 = barWidth(60, 300, 1_000_000_000)
    expect(at60).toBeLessThan(40)
    expect(barWidth(30, 300, 1_000_000_000)).toBe(0)
  })
})
