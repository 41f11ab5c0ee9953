// The load hook of module-loads.mjs (runs on the loader thread): records each ES module as it loads.
import { appendFileSync } from 'node:fs'
import { recordedPath } from './module-loads.mjs'

export async function load(url, context, nextLoad) {
  if (!url.startsWith('node:')) appendFileSync(process.env.ENVCRYPT_TEST_MODULE_LOADS, recordedPath(url) + '\n')
  return nextLoad(url, context)
}
