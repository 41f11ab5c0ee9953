// What a person sees on a terminal: a live progress line during the run (files, bytes, rate, ETA) and a
// one-screen summary at the end. Only on a TTY: pipes and CI logs keep the one-line summary that scripts grep.
import cliProgress from 'cli-progress'
import prettyBytes from 'pretty-bytes'
import prettyMs from 'pretty-ms'
import type { FileEvent, TreeSummary } from '../tree.js'

export interface ProgressReporter {
  onPlan(files: number, bytes: number): void
  onFile(event: FileEvent): void
  /** Print a line above the bar (errors, warnings) without tearing it. */
  log(line: string): void
  /** Clear the bar and stop its clock (a prompt is open); the returned function draws it again. */
  pause(): () => void
  stop(): void
}


/** Seconds of history behind the rate and the ETA: recent enough to follow a change of pace (a slow KMS, a
 *  cache warming up), long enough not to jump with each file. */
const RATE_WINDOW_SECONDS = 5

export function createProgress(stream: NodeJS.WriteStream = process.stderr): ProgressReporter {
  let multibar: cliProgress.MultiBar | undefined
  let bar: cliProgress.SingleBar | undefined
  let totalFiles = 0
  let totalBytes = 0
  let filesDone = 0
  let bytesDone = 0
  // (time, bar value) samples over the last RATE_WINDOW_SECONDS.
  const samples: Array<[number, number, number]> = []
  const barValue = () => (totalBytes ? bytesDone : filesDone)
  const payload = () => {
    const now = performance.now()
    samples.push([now, bytesDone, barValue()])
    while (samples.length > 2 && now - samples[0]![0] > RATE_WINDOW_SECONDS * 1000) samples.shift()
    const [since, bytesThen, valueThen] = samples[0]!
    const seconds = (now - since) / 1000
    const perSecond = seconds > 0.2 ? (barValue() - valueThen) / seconds : 0
    const remaining = Math.max(1, totalBytes || totalFiles) - barValue()
    return {
      files: `${filesDone}/${totalFiles} files`,
      bytes: totalBytes ? `${prettyBytes(bytesDone)}/${prettyBytes(totalBytes)}` : prettyBytes(bytesDone),
      rate: seconds > 0.2 ? `${prettyBytes((bytesDone - bytesThen) / seconds)}/s` : '…',
      // Nothing done yet, or nothing done lately: no estimate rather than "0s" or hours.
      eta: perSecond > 0 ? prettyMs(Math.ceil(remaining / perSecond) * 1000, { secondsDecimalDigits: 0 }) : '…',
    }
  }
  const draw = (files: number, bytes: number) => {
    const width = barWidth(stream.columns, files, bytes)
    multibar = new cliProgress.MultiBar(
      {
        stream,
        format: `${width >= 5 ? '{bar} ' : ''}{percentage}% | {files} | {bytes} | {rate} | ETA {eta}`,
        barsize: width,
        hideCursor: true,
        clearOnComplete: true,
        fps: 5,
      },
      cliProgress.Presets.shades_classic,
    )
    bar = multibar.create(Math.max(1, totalBytes || totalFiles), barValue(), payload())
  }
  return {
    onPlan(files, bytes) {
      totalFiles = files
      totalBytes = bytes
      samples.length = 0
      draw(files, bytes)
    },
    pause() {
      if (!multibar) return () => undefined
      multibar.stop()
      multibar = undefined
      bar = undefined
      const pausedAt = performance.now()
      return () => {
        // The time spent answering is not time spent working: shift the rate window past it.
        const paused = performance.now() - pausedAt
        for (const sample of samples) sample[0] += paused
        draw(totalFiles, totalBytes)
      }
    },
    onFile(event) {
      filesDone++
      bytesDone += event.bytesIn
      bar?.update(barValue(), payload())
    },
    log(line) {
      if (multibar) multibar.log(line + '\n')
      else stream.write(line + '\n')
    },
    stop() {
      multibar?.stop()
      multibar = undefined
    },
  }
}

/** The bar takes what the text beside it leaves of the terminal's width (the text at its widest), 40 at most:
 *  on a 60-column terminal bytes, rate and ETA stay visible. */
export function barWidth(columns: number | undefined, files: number, bytes: number): number {
  const total = bytes ? `${prettyBytes(bytes)}/${prettyBytes(bytes)}` : prettyBytes(0)
  const text = ` 100% | ${files}/${files} files | ${total} | 999.9 MB/s | ETA 59m 59s`
  return Math.max(0, Math.min(40, (columns || 80) - text.length - 1))
}

const MAX_LISTED_FAILURES = 10

/** The end-of-run summary for a terminal: a few aligned lines, failures listed (up to ten). */
export function renderEndSummary(summary: TreeSummary, verb: string, plannedFiles?: number): string {
  // Planned, not finished: an interrupted run did not reach every file.
  const files = plannedFiles ?? summary.files_ok + summary.files_failed + summary.files_skipped
  const rate = summary.seconds > 0 ? `, ${prettyBytes(summary.bytes_in / summary.seconds)}/s` : ''
  const lines = [
    `envcrypt: ${verb} ${summary.files_ok} file${summary.files_ok === 1 ? '' : 's'} of ${files} in ${prettyMs(summary.seconds * 1000)}`,
    `  files      ${summary.files_ok} ok, ${summary.files_failed} failed, ${summary.files_skipped} skipped`,
    `  bytes      ${prettyBytes(summary.bytes_in)} in, ${prettyBytes(summary.bytes_out)} out${rate}`,
  ]
  const calls = Object.entries(summary.kms_calls)
  lines.push(`  KMS calls: ${calls.length ? calls.map(([op, n]) => `${op}=${n}`).join(' ') : 'none'}`)
  if (summary.failures.length) {
    lines.push('  failed:')
    for (const failure of summary.failures.slice(0, MAX_LISTED_FAILURES)) lines.push(`    ${failure.input}: ${failure.error}`)
    const more = summary.failures.length - MAX_LISTED_FAILURES
    if (more > 0) lines.push(`    … and ${more} more (--summary FILE lists them all)`)
  }
  if (summary.interrupted) lines.push(`  interrupted by ${summary.interrupted}: in-flight outputs were removed`)
  return lines.join('\n')
}
