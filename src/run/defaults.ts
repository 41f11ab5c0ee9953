// Defaults that the command line shows in its help: kept apart from tree.ts so that printing them loads
// no engine, keyring or SDK module.
import { availableParallelism } from 'node:os'

/** Files in flight: enough to hide a KMS round trip (~10 ms) behind the work of the other files. Measured on
 *  2 cores, 1 GiB / 200 files: -j 4 left the workers waiting on KMS (unsigned encrypt 3.3 s), -j 8 did not (2.1 s). */
export const defaultJobs = () => Math.max(8, availableParallelism() * 4)
/** Files in flight when every file goes from a local file to a local file through the worker pool: a file
 *  waiting there holds only a queued task, and more of them keep the workers busy while a caching materials
 *  manager waits on KMS for its next data key (10,000 x 4 KiB: at -j 16 each worker idled ~14% of the run). */
export const defaultPoolJobs = () => Math.max(64, availableParallelism() * 16)

/** The engine used when none is named: ENVCRYPT_ENGINE, else the worker pool when there is a second core. */
export function defaultEngineName(): string {
  // Worker threads pay off only with a second core; the in-thread js engine is the same frame loop.
  return process.env.ENVCRYPT_ENGINE ?? (availableParallelism() > 1 ? 'pool' : 'js')
}
