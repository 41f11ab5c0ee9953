// Preloaded (`node --import`) into each `envcrypt bench` child: records the process's peak RSS (worker
// threads included) in the file named by ENVCRYPT_BENCH_RSS_FILE when it exits.
import { writeFileSync } from 'node:fs'
import { isMainThread } from 'node:worker_threads'

const target = process.env.ENVCRYPT_BENCH_RSS_FILE
if (target && isMainThread) {
  process.on('exit', () => writeFileSync(target, String(process.resourceUsage().maxRSS)))
}
