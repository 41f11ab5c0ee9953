// How many files may be in flight at once: what -j asks, within what the process can open. A file in flight
// holds up to three descriptors (its input, its output temporary, the output directory with --fsync); more
// files than the open-file limit allows failed with raw EMFILE errors.
import { readFileSync } from 'node:fs'
import { spawnSync } from 'node:child_process'

/** Descriptors kept for the process itself: stdio, the event loop, worker threads, KMS and S3 sockets. */
const RESERVED_DESCRIPTORS = 40
const DESCRIPTORS_PER_FILE = 3
/** Above this, more files in flight only cost memory: -j 100000 is capped, with a note. */
const MAX_JOBS = 1024

/** The soft RLIMIT_NOFILE of this process, or undefined when it cannot be read. Node has no getrlimit: Linux
 *  shows it in /proc/self/limits; elsewhere a shell child (which inherits it) prints it with `ulimit -n`. */
function openFileLimit(): number | undefined {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'))
    const soft = line?.slice('Max open files'.length).trim().split(/\s+/)[0]
    if (soft !== undefined) return soft === 'unlimited' ? Infinity : Number(soft)
  } catch {
    /* not Linux */
  }
  const shell = spawnSync('/bin/sh', ['-c', 'ulimit -n'], { encoding: 'utf8', timeout: 5000 })
  const text = shell.stdout?.trim()
  if (shell.status !== 0 || !text) return undefined
  return text === 'unlimited' ? Infinity : Number(text) || undefined
}

/** Files in flight: `requested` (an explicit -j, else `fallback`), capped by MAX_JOBS and the open-file limit.
 *  An explicit -j that is lowered gets a warning that says why. */
export function jobsWithinLimits(requested: number | undefined, fallback: number, warn: (message: string) => void, limit = openFileLimit()): number {
  const wanted = requested ?? fallback
  const byDescriptors = limit === undefined || limit === Infinity ? MAX_JOBS : Math.max(1, Math.floor((limit - RESERVED_DESCRIPTORS) / DESCRIPTORS_PER_FILE))
  const cap = Math.min(MAX_JOBS, byDescriptors)
  if (wanted <= cap) return wanted
  if (requested !== undefined) {
    const why = cap === MAX_JOBS ? `at most ${MAX_JOBS} files are processed at once` : `the open-file limit (ulimit -n) is ${limit}`
    warn(`-j ${requested} lowered to ${cap}: ${why}`)
  }
  return cap
}
