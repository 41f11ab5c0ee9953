// Preload (node --import) that appends the path of every module the process loads to the file named by
// ENVCRYPT_TEST_MODULE_LOADS: ES modules through a load hook, CommonJS ones as they are compiled. Lets a
// test assert which code a command loaded, not how long it took.
import Module, { register } from 'node:module'
import { appendFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const out = process.env.ENVCRYPT_TEST_MODULE_LOADS
if (out) {
  register('./module-loads-hooks.mjs', import.meta.url)
  const compile = Module.prototype._compile
  Module.prototype._compile = function (content, filename, ...rest) {
    appendFileSync(out, filename + '\n')
    return compile.call(this, content, filename, ...rest)
  }
}

/** The file an ESM load hook records for a URL (file: URLs as paths, others as they are). */
export function recordedPath(url) {
  return url.startsWith('file:') ? fileURLToPath(url) : url
}
