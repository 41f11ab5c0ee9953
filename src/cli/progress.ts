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
  stop(): void
}


export function createProgress(stream: NodeJS.WriteStream = process.stderr): ProgressReporter {
  let multibar: cliProgress.MultiBar | undefined
  let bar: cliProgress.SingleBar | undefined
  let totalFiles = 0
  let totalBytes = 0
  let filesDone = 0
  let bytesDone = 0
  let started = 0
  const payload = () => {
    const seconds = (performance.now() - started) / 1000
    return {
      files: `${filesDone}/${totalFiles} files`,
      bytes: totalBytes ? `${prettyBytes(bytesDone)}/${prettyBytes(totalBytes)}` : prettyBytes(bytesDone),
      rate: seconds > 0.2 ? `${prettyBytes(bytesDone / seconds)}/s` : '…',
    }
  }
  // The bar measures bytes when sizes are known in advance (files), else files (stdin, empty files).
  const barValue = () => (totalBytes ? bytesDone : filesDone)
  return {
    onPlan(files, bytes) {
      totalFiles = files
      totalBytes = bytes
      started = performance.now()
      multibar = new cliProgress.MultiBar(
        {
          stream,
          format: '{bar} {percentage}% | {files} | {bytes} | {rate} | ETA {eta_formatted}',
          hideCursor: true,
          clearOnComplete: true,
          etaBuffer: 50,
          fps: 5,
        },
        cliProgress.Presets.shades_classic,
      )
      bar = multibar.create(Math.max(1, totalBytes || totalFiles), 0, payload())
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

const MAX_LISTED_FAILURES = 10

/** The end-of-run summary for a terminal: a few aligned lines, failures listed (up to ten). */
export function renderEndSummary(summary: TreeSummary, verb: string): string {
  const files = summary.files_ok + summary.files_failed + summary.files_skipped
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
