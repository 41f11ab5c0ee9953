// What every tree command (encrypt/decrypt/reencrypt/migrate) does around the library call: check the
// metadata/summary destinations, report files as they finish, stop cleanly on SIGINT/SIGTERM, and end with
// the summary (JSON to --summary, a human one on stderr) and the exit code.
import { writeFileSync } from 'node:fs'
import { describeError, printable, UsageError } from '../errors.js'
import { removeLiveTemporaries } from '../store/local.js'
import { canonicalJson } from '../message/metadata.js'
import type { FileEvent, TreeSummary } from '../tree.js'

export const exitCodes = { ok: 0, failed: 1, usage: 2, SIGINT: 130, SIGTERM: 143 } as const

export interface OutputArgs {
  output?: string
  metadataOutput?: string
  suppressMetadata?: boolean
  summary?: string
}

/** aws-encryption-cli requires a metadata destination or -S; stdout can carry only one stream. */
export function checkOutputArgs(args: OutputArgs): void {
  if (args.metadataOutput === undefined && !args.suppressMetadata) {
    throw new UsageError('name a metadata destination with --metadata-output FILE|- or suppress it with -S')
  }
  if (args.metadataOutput !== undefined && args.suppressMetadata) throw new UsageError('--metadata-output and -S/--suppress-metadata exclude each other')
  if (args.output === '-' && (args.metadataOutput === '-' || args.summary === '-')) {
    throw new UsageError('-o - writes the data to stdout: send --metadata-output/--summary to a file instead')
  }
  if (args.metadataOutput === '-' && args.summary === '-') throw new UsageError('--metadata-output - and --summary - cannot share stdout')
}

export interface Session {
  signal: AbortSignal
  warn(message: string): void
  onFile(event: FileEvent): void
  onPlan(files: number, bytes: number): void
  /** Stop the progress bar, write the summary, and return the exit code. */
  finish(summary: TreeSummary, verb: string): number
  stopProgress(): void
  /** Clear the progress bar while a prompt is open; call the result when it is answered. */
  pauseProgress(): () => void
  verbosity: number
}

/** Writes nothing: for pipes, `-q`, and tests. */
const silentProgress = { onPlan() {}, onFile() {}, log: (line: string) => void process.stderr.write(line + '\n'), pause: () => () => undefined, stop() {} }

export async function startSession(args: { quiet?: boolean; verbose?: number; dryRun?: boolean; summary?: string }): Promise<Session> {
  const verbosity = args.quiet ? -1 : (args.verbose ?? 0)
  const onTerminal = Boolean(process.stderr.isTTY) && verbosity >= 0 && !args.dryRun
  // The progress bar's modules load only on a terminal.
  const terminal = onTerminal ? await import('./progress.js') : undefined
  const progress = terminal ? terminal.createProgress() : silentProgress
  const controller = new AbortController()
  const onSignal = (signal: NodeJS.Signals) => {
    if (controller.signal.aborted) {
      // A second signal: stop now, but still leave no temporary behind.
      removeLiveTemporaries()
      process.exit(exitCodes[signal as 'SIGINT' | 'SIGTERM'] ?? exitCodes.SIGTERM)
    }
    if (verbosity >= 0) process.stderr.write(`envcrypt: ${signal}: stopping; in-flight outputs are removed\n`)
    controller.abort(signal)
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  let plannedFiles: number | undefined
  return {
    signal: controller.signal,
    verbosity,
    warn(message) {
      if (verbosity >= 0) progress.log(`envcrypt: warning: ${printable(message)}`)
    },
    onFile(event) {
      progress.onFile(event)
      if (event.status === 'failed' && event.error !== 'interrupted' && !event.runWide) progress.log(`envcrypt: error: ${printable(event.input)}: ${event.error}`)
      else if (verbosity >= 1) progress.log(`envcrypt: ${event.status}: ${printable(event.input)} -> ${printable(event.output)}`)
    },
    onPlan(files, bytes) {
      plannedFiles = files
      progress.onPlan(files, bytes)
    },
    stopProgress: () => progress.stop(),
    pauseProgress: () => progress.pause(),
    finish(summary, verb) {
      progress.stop()
      removeLiveTemporaries()
      // The whole command, from process start (the library's own count starts at its call, after start-up).
      summary.seconds = Math.round(performance.now() / 10) / 100
      let outputError = summary.metadata_error
      if (args.summary !== undefined) {
        const text = canonicalJson(summary) + '\n'
        try {
          if (args.summary === '-') process.stdout.write(text)
          else writeFileSync(args.summary, text)
        } catch (err) {
          outputError ??= `cannot write the summary to ${args.summary} (${describeError(err)}); ${summary.files_ok} output(s) were written`
        }
      }
      if (outputError) progress.log(`envcrypt: error: ${printable(outputError)}`)
      if (summary.stopped) {
        // Once, naming the first file it failed: every other file would have failed the same way.
        const first = summary.failures.find((failure) => failure.error === summary.stopped)
        const where = first ? `${printable(first.input)}: ` : ''
        progress.log(`envcrypt: error: ${where}${summary.stopped}; the run stopped (${summary.files_failed} failed, ${summary.files_not_attempted ?? 0} not attempted)`)
      }
      // Off a terminal a clean run is silent, as aws-encryption-cli (cron mails nothing); -v, a failure or an
      // interruption still gets the one-line summary.
      const unclean = summary.files_failed > 0 || summary.interrupted !== undefined
      if (terminal) process.stderr.write(terminal.renderEndSummary(summary, verb, plannedFiles) + '\n')
      else if (verbosity >= 1 || (verbosity >= 0 && unclean)) process.stderr.write(describeSummary(summary, verb) + '\n')
      if (summary.interrupted) return exitCodes[summary.interrupted as 'SIGINT' | 'SIGTERM'] ?? exitCodes.SIGTERM
      return summary.files_failed > 0 || outputError ? exitCodes.failed : exitCodes.ok
    },
  }
}

function describeSummary(summary: TreeSummary, verb: string): string {
  const parts = [`envcrypt: ${verb} ${summary.files_ok} file${summary.files_ok === 1 ? '' : 's'}`]
  if (summary.files_skipped) parts.push(`skipped ${summary.files_skipped}`)
  if (summary.files_failed) parts.push(`failed ${summary.files_failed}`)
  if (summary.files_not_attempted) parts.push(`not attempted ${summary.files_not_attempted}`)
  parts.push(`${formatBytes(summary.bytes_in)} in, ${formatBytes(summary.bytes_out)} out, ${summary.seconds.toFixed(2)} s`)
  const calls = Object.entries(summary.kms_calls)
  if (calls.length) parts.push(`KMS calls: ${calls.map(([op, n]) => `${op}=${n}`).join(' ')}`)
  if (summary.interrupted) parts.push(`interrupted by ${summary.interrupted}`)
  return parts.join('; ')
}

function formatBytes(bytes: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB']
  let value = bytes
  let unit = 0
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000
    unit++
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`
}
