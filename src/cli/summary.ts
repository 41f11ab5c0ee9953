// Run summaries: merging the ones written by independent workers (`envcrypt merge-summaries`).
import { readFileSync } from 'node:fs'
import { UsageError } from '../errors.js'
import type { TreeSummary } from '../tree.js'

/** Sum counts, bytes and KMS calls; `seconds` is the longest worker's (they run side by side). */
export function mergeSummaries(summaries: readonly TreeSummary[]): TreeSummary & { workers: number } {
  const merged: TreeSummary & { workers: number } = {
    files_ok: 0, files_failed: 0, files_skipped: 0, bytes_in: 0, bytes_out: 0, seconds: 0, failures: [], kms_calls: {}, workers: summaries.length,
  }
  for (const summary of summaries) {
    merged.files_ok += summary.files_ok
    merged.files_failed += summary.files_failed
    merged.files_skipped += summary.files_skipped
    merged.bytes_in += summary.bytes_in
    merged.bytes_out += summary.bytes_out
    merged.seconds = Math.max(merged.seconds, summary.seconds)
    merged.failures.push(...summary.failures)
    for (const [operation, count] of Object.entries(summary.kms_calls)) merged.kms_calls[operation] = (merged.kms_calls[operation] ?? 0) + count
    if (summary.interrupted) merged.interrupted = summary.interrupted
  }
  return merged
}

export function readSummaryFile(path: string): TreeSummary {
  let parsed: unknown
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'))
  } catch (err) {
    throw new UsageError(`merge-summaries: ${path} is not a readable JSON summary (${(err as Error).message.split('\n')[0]})`)
  }
  const summary = parsed as TreeSummary
  for (const field of ['files_ok', 'files_failed', 'files_skipped', 'bytes_in', 'bytes_out', 'seconds'] as const) {
    if (typeof summary?.[field] !== 'number') throw new UsageError(`merge-summaries: ${path} has no numeric "${field}"; is it an envcrypt --summary file?`)
  }
  if (!Array.isArray(summary.failures) || typeof summary.kms_calls !== 'object') throw new UsageError(`merge-summaries: ${path} lacks failures/kms_calls`)
  return summary
}
