// One small source/sink interface for local trees, stdin/stdout and S3 (see s3.ts), so that the tree
// runner never cares where bytes come from or go. Sinks are atomic: nothing appears at the final name
// until `commit()`, and `abort()` leaves nothing behind.
import { closeSync, createReadStream, createWriteStream, fchmodSync, fsyncSync, linkSync, openSync, renameSync, unlinkSync } from 'node:fs'
import { mkdir, unlink, chmod, stat, readdir, open } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { createHash, randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import { PassThrough, Writable } from 'node:stream'
import { finished } from 'node:stream/promises'
import type { ByteSource } from '../message/engine.js'
import { EnvcryptError } from '../errors.js'
import { checkHandleUnchanged, type PlannedInput } from './input-check.js'

export interface InputItem {
  /** Shown in messages and metadata: an absolute path, `<stdin>`, or `s3://bucket/key`. */
  display: string
  /** Path relative to the input root, `/`-separated; the output tree mirrors it. */
  relPath: string
  size?: number
  /** Permission bits of a local file; outputs never get wider ones. */
  mode?: number
  mtimeMs?: number
  /** A local file's inode when planned: a file renamed over it is another file (input-check.ts). */
  ino?: number
  /** Not a regular file (a FIFO, socket or device): counted as skipped, never opened; the planner warned. */
  skip?: string
  /** Known at planning to fail (a directory that cannot be listed): the file's error; open() throws it. */
  failure?: string
  /** A local file's path, for engines that read it in another thread. */
  localPath?: string
  open(): Promise<ByteSource>
  /** Deletes the input (`migrate --delete-source`); absent where that is not possible. */
  remove?(): Promise<void>
  /** Deletes the file or object named by this input's name + `suffix`, if there is one (an S3 Encryption
   *  Client instruction file goes with its object). */
  removeSidecar?(suffix: string): Promise<void>
}

export interface OutputWriter {
  stream: Writable
  /** Make the output visible at its final name. With `noClobber`, fail rather than replace an existing one. */
  commit(options: { noClobber: boolean }): Promise<void>
  /** Discard everything written; safe to call more than once and after a failed commit. */
  abort(): Promise<void>
}

export interface OutputTarget {
  display: string
  /** Whether a complete output already exists at the final name (for --skip-existing / --no-overwrite). */
  exists(): Promise<boolean>
  /** `source`: the input's size and mtime, which a remote sink may record for a later `--sync`. `noClobber`:
   *  the commit will not replace an existing output (a remote sink makes its write conditional from the start). */
  open(options: { mode: number; fsync: boolean; noClobber?: boolean; source?: { size?: number; mtimeMs?: number } }): Promise<OutputWriter>
  /** `--sync`: whether the output was made from a source of this size and mtime (sinks that record them). */
  isUpToDate?(input: InputItem): Promise<boolean>
  /** Reads a committed output back (`migrate --delete-source` verifies it first). */
  read?(): Promise<ByteSource>
  /** Local files only: a temporary name beside the output, registered for removal on exit, for a writer in
   *  another thread that creates, writes and commits it itself (`writeTemporaryFile`'s contract).
   *  Creates nothing: opening and renaming a file costs the main thread more than the worker. */
  openTemporary?(options: { mode: number; fsync: boolean; noClobber: boolean }): Promise<TemporaryWriter>
}

/** What a writer in another thread needs to create, fill and commit an output itself. Plain data. */
export interface TemporaryTarget {
  /** Created with O_EXCL and mode 0600, beside `finalPath`. */
  temporaryPath: string
  finalPath: string
  /** Permission bits the output gets just before it is renamed into place. */
  mode: number
  fsync: boolean
  /** Link instead of rename: fail rather than replace an existing output. */
  noClobber: boolean
}

/** verify's output (store/verify.ts): nothing is created. The plaintext is compared, as it streams, with the
 *  local file `againstPath`, or discarded; `problem` says why there is nothing to compare with. Plain data. */
export interface CheckTarget {
  check: true
  againstPath?: string
  problem?: string
}

/** What a writer in another thread is given: a file to create and commit, or verify's check. */
export type FileTarget = TemporaryTarget | CheckTarget

interface TemporaryWriter extends Omit<OutputWriter, 'stream' | 'commit'> {
  target: FileTarget
  /** The writer reported that it committed the output: forget the temporary. */
  commit(): Promise<void>
}

/** Temporary outputs start with this; the planner never takes them as input. */
export const TEMP_PREFIX = '.envcrypt-tmp-'
const READ_CHUNK = 1024 * 1024

// Temporary names carry the host and process that own them: `.envcrypt-tmp-HOST-PID-RANDOM`. A temporary left
// by a process that died (SIGKILL, power loss) on this host is removed the next time envcrypt writes into its
// directory; those of live processes, and of other hosts sharing the directory, are never touched.
const HOST_TAG = createHash('sha256').update(hostname()).digest('hex').slice(0, 8)
const OWNED_TEMPORARY = new RegExp(`^${TEMP_PREFIX.replace(/[.-]/g, '\\$&')}${HOST_TAG}-(\\d+)-[0-9a-f]{16}$`)
const sweptDirectories = new Map<string, Promise<void>>()

function processIsAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** Remove temporaries that dead processes of this host left in `dir` (once per directory per run). */
function removeStaleTemporaries(dir: string): Promise<void> {
  let sweep = sweptDirectories.get(dir)
  if (!sweep) {
    sweep = (async () => {
      for (const name of await readdir(dir).catch(() => [] as string[])) {
        const owner = OWNED_TEMPORARY.exec(name)
        if (owner && Number(owner[1]) !== process.pid && !processIsAlive(Number(owner[1]))) {
          await unlink(join(dir, name)).catch(() => undefined)
        }
      }
    })()
    sweptDirectories.set(dir, sweep)
  }
  return sweep
}

// mkdir -p once per directory per run, not once per file (10,000 small files in one directory).
const madeDirectories = new Map<string, Promise<unknown>>()
function makeDirectory(dir: string): Promise<unknown> {
  let made = madeDirectories.get(dir)
  if (!made) {
    made = mkdir(dir, { recursive: true })
    // A failure (or a directory removed meanwhile) is retried by the next file.
    made.catch(() => madeDirectories.delete(dir))
    madeDirectories.set(dir, made)
  }
  return made
}

// Temporaries in flight, so a signal handler can remove them synchronously before exiting; once more at exit,
// for any whose creation was still in flight when the run stopped.
const liveTemporaries = new Set<string>()
process.once('exit', () => removeLiveTemporaries())
export function removeLiveTemporaries(): number {
  let removed = 0
  for (const path of liveTemporaries) {
    try {
      unlinkSync(path)
      removed++
    } catch {
      /* already gone */
    }
  }
  liveTemporaries.clear()
  return removed
}

export function localFileInput(path: string, relPath: string, info: { size: number; mode: number; mtimeMs: number; ino: number }): InputItem {
  const planned: PlannedInput = { size: info.size, mtimeMs: info.mtimeMs, ino: info.ino }
  return {
    display: path,
    relPath,
    size: info.size,
    mode: info.mode & 0o777,
    mtimeMs: info.mtimeMs,
    ino: info.ino,
    localPath: path,
    open: async () => readCheckedFile(path, planned),
    remove: () => unlink(path),
    removeSidecar: (suffix) => unlink(path + suffix).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err
    }),
  }
}

/** A local input as a byte source that refuses to end (throws InputChangedError) unless the file was the planned
 *  one from the first read to the last (input-check.ts); it never yields more than the planned size, so an
 *  engine told the plaintext length never sees more. `destroy()` stops it at its next read (an interrupted run). */
function readCheckedFile(path: string, planned: PlannedInput): ByteSource & { destroy(): void } {
  let stopped = false
  const chunks = (async function* () {
    const handle = await open(path, 'r')
    try {
      await checkHandleUnchanged(() => handle.stat(), path, planned)
      let bytesRead = 0
      for (;;) {
        if (stopped) throw new EnvcryptError('interrupted')
        // Sized to what is left (a 4 KiB file costs a 4 KiB buffer and a one-byte read that finds the end).
        const want = planned.size === undefined || planned.size < bytesRead ? READ_CHUNK : Math.max(1, Math.min(READ_CHUNK, planned.size - bytesRead))
        const buffer = Buffer.allocUnsafe(want)
        const { bytesRead: got } = await handle.read(buffer, 0, want, null)
        if (got === 0) break
        bytesRead += got
        if (planned.size !== undefined && bytesRead > planned.size) await checkHandleUnchanged(() => handle.stat(), path, planned, bytesRead)
        yield buffer.subarray(0, got)
      }
      await checkHandleUnchanged(() => handle.stat(), path, planned, bytesRead)
    } finally {
      await handle.close()
    }
  })()
  return Object.assign(chunks, { destroy: () => void (stopped = true) })
}

export function stdinInput(): InputItem {
  return { display: '<stdin>', relPath: 'stdin', open: async () => process.stdin }
}

export function localFileOutput(path: string): OutputTarget {
  return {
    display: path,
    exists: async () => {
      try {
        await stat(path)
        return true
      } catch {
        return false
      }
    },
    read: async () => createReadStream(path, { highWaterMark: READ_CHUNK }),
    open: async ({ mode, fsync }) => {
      const temporary = await prepareTemporary(path)
      // 0600 while being written: the content may be plaintext and is not yet authenticated.
      const stream = createWriteStream(temporary, { flags: 'wx', mode: 0o600, highWaterMark: READ_CHUNK, flush: fsync } as any)
      await new Promise<void>((resolve, reject) => {
        stream.once('open', () => resolve())
        stream.once('error', reject)
      })
      const renamer = temporaryRenamer(temporary, path, { mode, fsync })
      return {
        stream,
        async commit(options) {
          await renamer.commit(options, () => finished(stream))
        },
        async abort() {
          await renamer.abort(() => stream.destroy())
        },
      }
    },
    openTemporary: async ({ mode, fsync, noClobber }) => {
      const temporaryPath = await prepareTemporary(path)
      let state: 'open' | 'committed' | 'aborted' = 'open'
      return {
        target: { temporaryPath, finalPath: path, mode: mode & 0o777, fsync, noClobber },
        async commit() {
          state = 'committed'
          liveTemporaries.delete(temporaryPath)
        },
        async abort() {
          if (state !== 'open') return
          state = 'aborted'
          // The writer may still be creating it: it checks its stop flag after creating (writeTemporaryFile).
          await unlink(temporaryPath).catch(() => undefined)
          liveTemporaries.delete(temporaryPath)
        },
      }
    },
  }
}

/** Thrown by writeTemporaryFile when its stop flag is set: the run was interrupted. */
export class WriteStopped extends Error {}

/** Create `target`'s temporary (O_EXCL, 0600), let `write` fill it through the descriptor, then fsync it if
 *  asked, give it the output's mode and put it in place (placeTemporarySync, as `temporaryRenamer` does).
 *  The file system calls are synchronous: this runs in worker threads, where blocking is cheaper than a
 *  thread-pool hop. On any failure the temporary is removed.
 *  `stopped()` is checked right after the file exists and again just before the rename: an interrupted
 *  run's main thread removes the temporaries it knows of, and one created after that sweep is removed here. */
export async function writeTemporaryFile<T>(target: TemporaryTarget, stopped: () => boolean, write: (fd: number) => Promise<T>): Promise<T> {
  const { temporaryPath } = target
  let fd: number | undefined = openSync(temporaryPath, 'wx', 0o600)
  try {
    if (stopped()) throw new WriteStopped('interrupted')
    const result = await write(fd)
    if (target.fsync) fsyncSync(fd)
    fchmodSync(fd, target.mode)
    closeSync(fd)
    fd = undefined
    if (stopped()) throw new WriteStopped('interrupted')
    placeTemporarySync(target)
    return result
  } catch (err) {
    if (fd !== undefined) closeSync(fd)
    try {
      unlinkSync(temporaryPath)
    } catch {
      /* not created, or already removed by the main thread */
    }
    throw err
  }
}

/** Put a finished temporary at its final name: rename, or with `noClobber` link (which fails with EEXIST
 *  instead of replacing, so no other writer's file is ever lost) and unlink; then, with `fsync`, sync the
 *  directory so the new name survives a power loss. Synchronous: a few metadata calls, cheaper than a
 *  thread-pool hop each, on the main thread as in a worker. */
function placeTemporarySync({ temporaryPath, finalPath, noClobber, fsync }: Omit<TemporaryTarget, 'mode'>): void {
  if (noClobber) {
    try {
      linkSync(temporaryPath, finalPath)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new EnvcryptError(`output ${finalPath} already exists (not overwritten)`)
      throw err
    }
    unlinkSync(temporaryPath)
  } else {
    renameSync(temporaryPath, finalPath)
  }
  if (fsync) {
    const dir = openSync(dirname(finalPath), 'r')
    try {
      fsyncSync(dir)
    } finally {
      closeSync(dir)
    }
  }
}

/** The output's directory exists, stale temporaries of dead processes are gone; a fresh temporary name beside `path`. */
async function prepareTemporary(path: string): Promise<string> {
  const dir = dirname(path)
  await makeDirectory(dir)
  await removeStaleTemporaries(dir)
  const temporary = join(dir, `${TEMP_PREFIX}${HOST_TAG}-${process.pid}-${randomBytes(8).toString('hex')}`)
  // Registered before the file exists: a signal may arrive while the open is in flight on libuv's threads.
  liveTemporaries.add(temporary)
  return temporary
}

/** Commit (chmod, then rename or no-clobber link into place) or abort (unlink) one temporary, once. */
function temporaryRenamer(temporary: string, path: string, { mode, fsync }: { mode: number; fsync: boolean }) {
  let state: 'open' | 'committed' | 'aborted' = 'open'
  return {
    async commit({ noClobber }: { noClobber: boolean }, flushed: () => Promise<unknown>) {
      if (state !== 'open') throw new EnvcryptError(`output ${path} already ${state}`)
      await flushed()
      await chmod(temporary, mode & 0o777)
      placeTemporarySync({ temporaryPath: temporary, finalPath: path, noClobber, fsync })
      liveTemporaries.delete(temporary)
      state = 'committed'
    },
    async abort(closeWriter: () => void) {
      if (state === 'committed') return
      state = 'aborted'
      closeWriter()
      await unlink(temporary).catch(() => undefined)
      liveTemporaries.delete(temporary)
    },
  }
}

/** Standard output. With `buffer`, nothing is written until commit (i.e. until the message is authenticated). */
export function stdoutOutput(options: { buffer: boolean }): OutputTarget {
  return {
    display: '<stdout>',
    exists: async () => false,
    open: async () => {
      if (options.buffer) {
        const chunks: Buffer[] = []
        const stream = new Writable({
          write(chunk, _encoding, callback) {
            chunks.push(chunk)
            callback()
          },
        })
        return {
          stream,
          async commit() {
            for (const chunk of chunks) await writeStdout(chunk)
            chunks.length = 0
          },
          async abort() {
            chunks.length = 0
          },
        }
      }
      // Never end process.stdout itself: later output (a summary) may follow.
      const stream = new PassThrough()
      stream.pipe(process.stdout, { end: false })
      return {
        stream,
        commit: () => finished(stream).then(() => undefined),
        async abort() {
          stream.unpipe(process.stdout)
          stream.destroy()
        },
      }
    },
  }
}

function writeStdout(chunk: Buffer): Promise<void> {
  return new Promise((resolve, reject) => process.stdout.write(chunk, (err) => (err ? reject(err) : resolve())))
}

/** Opens the real output only when the first byte (or the end) arrives, so a message refused at its
 *  header (wrong key, context mismatch, not a message) leaves nothing at all behind: no file, no directory,
 *  no upload started. */
export function lazyWriter(open: () => Promise<OutputWriter>): OutputWriter {
  let opening: Promise<OutputWriter> | undefined
  const ensure = () =>
    (opening ??= open().then((writer) => {
      writer.stream.on('error', (err) => stream.destroy(err))
      return writer
    }))
  const stream: Writable = new Writable({
    highWaterMark: READ_CHUNK,
    write(chunk, _encoding, callback) {
      ensure().then((writer) => {
        if (writer.stream.write(chunk)) callback()
        else writer.stream.once('drain', () => callback())
      }, callback)
    },
    final(callback) {
      ensure().then((writer) => writer.stream.end(() => callback()), callback)
    },
  })
  // Its errors reach the file's handling through the engine's writes and commit's finished(); an error
  // emitted while no write is pending (ENOSPC on a flush) must not crash the process as an unhandled event.
  stream.on('error', () => undefined)
  return {
    stream,
    async commit(options) {
      if (!opening) throw new EnvcryptError('internal: output committed before it was written')
      await finished(stream)
      return (await opening).commit(options)
    },
    async abort() {
      stream.destroy()
      const writer = await opening?.catch(() => undefined)
      await writer?.abort()
    },
  }
}
