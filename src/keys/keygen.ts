// `envcrypt keygen`: a new random raw AES key, created with mode 0600 and never replacing a file.
import { randomBytes } from 'node:crypto'
import { openSync, writeSync, closeSync, fsyncSync } from 'node:fs'
import { UsageError } from '../errors.js'

export function keygen(path: string, bytes = 32): void {
  if (![16, 24, 32].includes(bytes)) throw new UsageError('keygen: --bytes must be 16, 24 or 32')
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
