// `envcrypt keygen`: a new random raw AES key, created with mode 0600 and never replacing a file.
import { randomBytes } from 'node:crypto'
import { chmodSync, closeSync, existsSync, fsyncSync, mkdirSync, openSync, writeSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { UsageError } from '../errors.js'

export function keygen(path: string, bytes = 32): void {
  if (![16, 24, 32].includes(bytes)) throw new UsageError('keygen: --bytes must be 16, 24 or 32')
  makeKeyDirectories(resolve(path))
  let fd: number
  try {
    fd = openSync(path, 'wx', 0o600)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code === 'EEXIST') throw new UsageError(`keygen: ${path} already exists; refusing to replace a key`)
    throw new UsageError(`keygen: cannot create ${path} (${code ?? 'error'})`)
  }
  try {
    writeSync(fd, randomBytes(bytes))
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}

/** `mkdir -p` of the key's parent (a fresh machine has no ~/.envcrypt), each new directory mode 0700 whatever
 *  the umask: a key directory is private. Existing directories are left as they are. */
function makeKeyDirectories(keyPath: string): void {
  const missing: string[] = []
  for (let dir = dirname(keyPath); !existsSync(dir) && dirname(dir) !== dir; dir = dirname(dir)) missing.unshift(dir)
  for (const dir of missing) {
    try {
      mkdirSync(dir, { mode: 0o700 })
      chmodSync(dir, 0o700)
    } catch (err) {
      throw new UsageError(`keygen: cannot create directory ${dir} (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
    }
  }
}
