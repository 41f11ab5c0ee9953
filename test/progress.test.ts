// The terminal summary and progress bar's width (src/cli/progress.ts).
import { describe, expect, it, vi } from 'vitest'
import { Writable } from 'node:stream'
import { barWidth, createProgress, renderEndSummary } from '../src/cli/progress.js'

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

describe('--interactive on a terminal', () => {
  it('the bar is cleared while a prompt is open and drawn again, with the files done meanwhile, when it is answered', async () => {
    const writes: string[] = []
    const terminal = Object.assign(new Writable({ write(chunk, _encoding, done) { writes.push(String(chunk)); done() } }), { isTTY: true, columns: 80, cursorTo() {}, clearLine() {}, moveCursor() {} })
    const progress = createProgress(terminal as unknown as NodeJS.WriteStream)
    const file = { input: 'a', output: 'b', status: 'ok' as const, bytesIn: 100, bytesOut: 0 }
    progress.onPlan(4, 400)
    progress.onFile(file)
    await vi.waitFor(() => expect(writes.join('')).toContain('1/4 files'))
    const resume = progress.pause()
    const whilePaused = writes.length
    progress.onFile(file)
    // Several redraw periods (the bar redraws 5 times a second): nothing may be drawn over the prompt.
    await new Promise((done) => setTimeout(done, 600))
    expect(writes.slice(whilePaused)).toEqual([])
    resume()
    await vi.waitFor(() => expect(writes.slice(whilePaused).join('')).toContain('2/4 files'))
    progress.stop()
  })
})
