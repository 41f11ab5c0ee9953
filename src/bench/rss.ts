// Preloaded (`node --import`) into each `envcrypt bench` child: records the process's peak RSS in KiB
// (worker threads included) in the file named by ENVCRYPT_BENCH_RSS_FILE when it exits.
// On Linux, VmHWM: getrusage's maxRSS survives exec, so a child forked from a large parent would report the
// parent's peak instead of its own.
import { readFileSync, writeFileSync } from 'node:fs'
import { isMainThread } from 'node:worker_threads'

function peakRssKiB(): number {
  try {
    const match = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'))
    if (match) return Number(match[1])
  } catch {
    /* not Linux */
  }
  return process.resourceUsage().maxRSS
}

const target = process.env.ENVCRYPT_BENCH_RSS_FILE
if (target && isMainThread) {
  process.on('exit', () => writeFileSync(target, String(peakRssKiB())))
}
