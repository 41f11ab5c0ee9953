// verify's "null store": output targets that never open a file. The decrypt path runs unchanged (runTree,
// run/file.ts, every engine, the worker pool), and the plaintext it releases, one authenticated batch at a
// time, is either dropped or compared as it streams with the plaintext file it should equal (--against).
// A mismatch does not stop the decrypt: the message is still authenticated to its end, so the verdict can
// say both whether the message is intact and whether it matches.
import { closeSync, openSync, readSync } from 'node:fs'
import { Writable } from 'node:stream'
import { finished } from 'node:stream/promises'
import { describeError, EnvcryptError } from '../errors.js'
import type { ByteSource } from '../message/engine.js'
import { FileOutput, type FrameBuffers } from '../message/file-io.js'
import type { CheckTarget, InputItem, OutputTarget } from './local.js'

/** Up to `length` bytes of the expected plaintext, the next ones; an empty array at its end. The bytes may
 *  be overwritten by the next call. */
type PullExpected = (length: number) => Promise<Uint8Array>

/** A sink that compares what it is given with `pull`'s bytes (or drops it when there is nothing to compare
 *  with). It never fails a write: `verdict()`, once the decrypt has ended the stream, throws on a mismatch. */
class PlaintextCheck extends Writable {
  private position = 0
  private difference?: string

  constructor(
    private readonly pull: PullExpected | undefined,
    private readonly againstName: string,
    private readonly problem?: string,
    private readonly release?: () => void,
  ) {
    super({ highWaterMark: 1024 * 1024 })
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.compare(chunk).then(() => callback(), callback)
  }

  override _final(callback: (error?: Error | null) => void): void {
    const atEnd = async () => {
      if (this.pull && this.difference === undefined && (await this.pull(1)).length > 0) {
        this.difference = `${this.againstName} is longer than the message's ${this.position} bytes of plaintext`
      }
    }
    atEnd().then(() => callback(), callback)
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.release?.()
    callback(error)
  }

  /** After the message was authenticated to its end: throws unless its plaintext matched (or was only to be dropped). */
  verdict(): void {
    const why = this.problem ?? this.difference
    if (why !== undefined) throw new EnvcryptError(`the message is intact, but ${why}`)
  }

  private async compare(chunk: Buffer): Promise<void> {
    let offset = 0
    while (this.pull && this.difference === undefined && offset < chunk.length) {
      const matched = matchExpected(chunk, offset, await this.pull(chunk.length - offset), this.position, this.againstName)
      if (typeof matched === 'string') this.difference = matched
      else offset += matched
    }
    this.position += chunk.length
  }
}

/** `expected` against `chunk` from `offset` (`position` is the chunk's place in the plaintext): the bytes that
 *  matched, or the difference in words. */
function matchExpected(chunk: Uint8Array, offset: number, expected: Uint8Array, position: number, againstName: string): number | string {
  const at = position + offset
  if (expected.length === 0) return `${againstName} is shorter (${at} bytes) than the message's plaintext`
  const actual = chunk.subarray(offset, offset + expected.length)
  if (Buffer.compare(actual, expected) === 0) return expected.length
  let i = 0
  while (actual[i] === expected[i]) i++
  return `its plaintext differs from ${againstName} at byte ${at + i}`
}

/** Expected bytes from a byte source (an S3 object, a file read as a stream). */
function pullFromSource(source: ByteSource): { pull: PullExpected; release: () => void } {
  const iterator = source[Symbol.asyncIterator]()
  let rest: Uint8Array = new Uint8Array(0)
  let ended = false
  return {
    pull: async (length) => {
      while (rest.length === 0 && !ended) {
        const next = await iterator.next()
        if (next.done) ended = true
        else rest = next.value
      }
      const piece = rest.subarray(0, length)
      rest = rest.subarray(piece.length)
      return piece
    },
    release: () => void iterator.return?.()?.catch(() => undefined),
  }
}

/** Expected bytes from a local file with synchronous reads into one reused buffer (the pool's workers). */
function pullFromFile(fd: number): (length: number) => Uint8Array {
  let buffer = Buffer.allocUnsafe(0)
  return (length) => {
    if (buffer.length < length) buffer = Buffer.allocUnsafe(Math.min(Math.max(length, 64 * 1024), 1024 * 1024))
    const read = readSync(fd, buffer, 0, Math.min(length, buffer.length), null)
    return buffer.subarray(0, read)
  }
}

/** The pool workers' check sink: a FileOutput whose writes are compared (or dropped) at once, synchronously,
 *  so the decrypt loop keeps its reused buffers and native kernel exactly as for a file. Writes nothing. */
class CheckFileOutput extends FileOutput {
  private position = 0
  private difference?: string
  constructor(
    buffers: FrameBuffers,
    private readonly pull: ((length: number) => Uint8Array) | undefined,
    private readonly againstName: string,
    private readonly problem?: string,
  ) {
    super(-1, buffers)
  }
  override write(chunk: Uint8Array): void {
    let offset = 0
    while (this.pull && this.difference === undefined && offset < chunk.byteLength) {
      const matched = matchExpected(chunk, offset, this.pull(chunk.byteLength - offset), this.position, this.againstName)
      if (typeof matched === 'string') this.difference = matched
      else offset += matched
    }
    this.position += chunk.byteLength
  }
  override flush(): void {}
  /** After the message was authenticated to its end: throws unless its plaintext matched (or was only to be dropped). */
  verdict(): void {
    if (this.pull && this.difference === undefined && this.pull(1).length > 0) {
      this.difference = `${this.againstName} is longer than the message's ${this.position} bytes of plaintext`
    }
    const why = this.problem ?? this.difference
    if (why !== undefined) throw new EnvcryptError(`the message is intact, but ${why}`)
  }
}

/** What one message is checked against: its plaintext file, or why there is none. */
export interface Expected {
  /** The plaintext file (local or S3); undefined when the message is only authenticated. */
  against?: InputItem
  /** Why there is nothing to compare with although --against was given (no such file, name without suffix). */
  problem?: string
}

/** The output target of one message under verify: creates nothing, anywhere. */
export function checkOutput(expected: Expected): OutputTarget {
  const { against, problem } = expected
  return {
    display: against?.display ?? '(verified only)',
    exists: async () => false,
    open: async () => {
      let sink: PlaintextCheck
      const opened = against && (await openExpected(against))
      if (against && opened && 'source' in opened) {
        const { pull, release } = pullFromSource(opened.source)
        sink = new PlaintextCheck(pull, against.display, undefined, release)
      } else {
        sink = new PlaintextCheck(undefined, '', opened && 'problem' in opened ? opened.problem : problem)
      }
      return {
        stream: sink,
        async commit() {
          await finished(sink)
          sink.verdict()
        },
        async abort() {
          sink.destroy()
        },
      }
    },
    // The pool's workers compare with a local file themselves; an S3 plaintext goes by stream.
    openTemporary: against && against.localPath === undefined ? undefined : async () => ({
      target: { check: true, againstPath: against?.localPath, problem } satisfies CheckTarget,
      commit: async () => undefined,
      abort: async () => undefined,
    }),
  }
}

/** The plaintext as a source, or why it cannot be read (the message is still authenticated). */
async function openExpected(against: InputItem): Promise<{ source: ByteSource } | { problem: string }> {
  try {
    return { source: await against.open() }
  } catch (err) {
    return { problem: `${against.display} cannot be read (${describeError(err)})` }
  }
}

/** A worker's sink for a check target: opens the plaintext file (if any), runs `decryptInto`, then gives the
 *  verdict. Nothing is created. */
export async function checkInto<T>(target: CheckTarget, buffers: FrameBuffers, decryptInto: (output: FileOutput) => Promise<T>): Promise<T> {
  let fd: number | undefined
  let problem = target.problem
  try {
    if (target.againstPath !== undefined) {
      try {
        fd = openSync(target.againstPath, 'r')
      } catch (err) {
        problem = `${target.againstPath} cannot be read (${describeError(err)})`
      }
    }
    const output = new CheckFileOutput(buffers, fd === undefined ? undefined : pullFromFile(fd), target.againstPath ?? '', problem)
    const result = await decryptInto(output)
    output.verdict()
    return result
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
}
