// Local files through buffers that the caller owns and reuses: the pool's worker threads read, seal or open,
// and write every batch of a message in the same few buffers, message after message.
//
// Why: a fresh 1 MiB Buffer per read and per batch is a fresh mapping whose pages fault in on first touch and
// go back to the kernel after the next GC. Decrypting 1 GiB that way spent ~11% of its CPU in page faults,
// ~20% in the kernel copying into and out of freshly faulted pages and ~7% in Buffer.concat; a buffer that
// stays mapped is also still in the CPU cache when the next step reads it.
import { readSync, writeSync } from 'node:fs'
import { EnvcryptError } from '../errors.js'

/** Buffers one thread reuses for one message at a time (the pool runs one file per thread at a time). */
export class FrameBuffers {
  private readonly slots = new Map<string, Buffer>()
  /** A buffer of at least `size` bytes for `slot`, holding whatever its last user left in it. */
  get(slot: 'input' | 'plaintext' | 'sealed' | 'gather', size: number): Buffer {
    let buffer = this.slots.get(slot)
    if (!buffer || buffer.length < size) {
      buffer = Buffer.allocUnsafeSlow(size)
      this.slots.set(slot, buffer)
    }
    return buffer
  }
}

/** Read from `fd` into buffer[offset, offset + length) until it is full or the file ends; bytes read. */
function readFully(fd: number, buffer: Buffer, offset: number, length: number): number {
  let done = 0
  while (done < length) {
    const read = readSync(fd, buffer, offset + done, length - done, null)
    if (read === 0) break
    done += read
  }
  return done
}

/** A local input file, read synchronously into `buffers` (the encrypt and decrypt loops take it instead of a
 *  byte source). */
export class FileInput {
  constructor(
    readonly fd: number,
    readonly buffers: FrameBuffers,
    /** Called before each read: throws to stop (the run was interrupted). */
    readonly checkStop: () => void,
  ) {}
}

/** An output file written synchronously: `write` returns once the bytes are in the kernel or copied, so the
 *  caller may reuse the chunk's buffer right away. Small chunks are gathered (a 4 KiB file's header, frames
 *  and signature are one system call); `flush` writes what is gathered. The frame loops seal and open into
 *  `buffers`. Remembers the first chunk (the message header, on encrypt). */
export class FileOutput {
  firstChunk?: Uint8Array
  private readonly gather: Buffer
  private gathered = 0
  constructor(
    readonly fd: number,
    readonly buffers: FrameBuffers,
  ) {
    this.gather = buffers.get('gather', GATHER_BYTES)
  }
  write(chunk: Uint8Array): void {
    // A copy in a buffer of its own size: it is posted back to the main thread.
    this.firstChunk ??= new Uint8Array(chunk)
    if (this.gathered + chunk.byteLength > GATHER_BYTES) this.flush()
    if (chunk.byteLength > GATHER_BYTES) return writeFully(this.fd, chunk)
    this.gather.set(chunk, this.gathered)
    this.gathered += chunk.byteLength
  }
  flush(): void {
    const gathered = this.gathered
    this.gathered = 0
    if (gathered > 0) writeFully(this.fd, this.gather.subarray(0, gathered))
  }
}

/** Chunks up to this size are copied together and written at once. */
const GATHER_BYTES = 64 * 1024

function writeFully(fd: number, chunk: Uint8Array): void {
  let done = 0
  while (done < chunk.byteLength) done += writeSync(fd, chunk, done, chunk.byteLength - done)
}

/** The rest of an input file as one window `buffer[position, buffer.length)` over a reused buffer: the decrypt
 *  loop's reader for local files (same members as ChunkReader). `ensure` moves the unread tail (at most a
 *  partial frame) to the front and fills the rest with one or more reads. */
export class FileChunkReader {
  buffer: Buffer
  position = 0
  bytesRead: number
  ended = false
  private storage: Buffer
  constructor(
    first: Buffer,
    private readonly fd: number,
    private readonly readTarget: number,
    buffers: FrameBuffers,
    /** Called before each read: throws to stop (the run was interrupted). */
    private readonly checkStop: () => void,
  ) {
    this.storage = buffers.get('input', Math.max(readTarget, first.length))
    first.copy(this.storage, 0)
    this.buffer = this.storage.subarray(0, first.length)
    this.bytesRead = first.length
  }
  get available(): number {
    return this.buffer.length - this.position
  }
  /** Make at least `needed` bytes available (reading up to the read target while at it); false at end of input. */
  async ensure(needed: number): Promise<boolean> {
    return this.ensureSync(needed)
  }
  ensureSync(needed: number): boolean {
    if (this.available >= needed) return true
    if (this.ended) return false
    this.checkStop()
    const want = Math.max(needed, this.readTarget)
    let total = this.available
    if (this.storage.length < want) {
      // A frame larger than the read target: a buffer of its own for this message.
      const grown = Buffer.allocUnsafeSlow(want)
      this.buffer.copy(grown, 0, this.position)
      this.storage = grown
    } else if (total > 0) {
      // `buffer` always starts at the front of `storage`.
      this.storage.copyWithin(0, this.position, this.buffer.length)
    }
    const read = readFully(this.fd, this.storage, total, want - total)
    if (read < want - total) this.ended = true
    total += read
    this.bytesRead += read
    this.buffer = this.storage.subarray(0, total)
    this.position = 0
    return total >= needed
  }
}

/** Room for `batchBytes` of plaintext as frames of `frameLength`, the final frame included: a regular frame
 *  adds 4 + 12 + 16 bytes, the final one 4 + 4 + 12 + 4 + 16 (every suite has 12-byte IVs and 16-byte tags;
 *  encryptFrames allocates when its buffer is too small, so this only has to be right to save that). */
const sealedBytes = (batchBytes: number, frameLength: number) => batchBytes + Math.ceil(batchBytes / frameLength) * 32 + 40

/** The encrypt loop's body for a local file: whole batches (a multiple of the frame length) read into one
 *  reused buffer and sealed into another. The batch that comes short (the end of the file) ends with the final
 *  frame, which is empty when the file is a whole number of batches, as the SDK writes it. Refuses more
 *  plaintext than `plaintextLength`. Returns the plaintext byte count. */
export function encryptFileBody(
  input: FileInput,
  options: { batchBytes: number; frameLength: number; plaintextLength?: number },
  seal: (plaintext: Buffer, isLast: boolean, into: Buffer) => Buffer,
  emit: (chunk: Buffer) => unknown,
): number {
  const { batchBytes, frameLength, plaintextLength } = options
  const plaintext = input.buffers.get('plaintext', batchBytes)
  const sealed = input.buffers.get('sealed', sealedBytes(batchBytes, frameLength))
  let bytesIn = 0
  for (;;) {
    input.checkStop()
    const read = readFully(input.fd, plaintext, 0, batchBytes)
    bytesIn += read
    if (plaintextLength !== undefined && bytesIn > plaintextLength) {
      throw new EnvcryptError(`more plaintext than the declared length (${plaintextLength} bytes)`)
    }
    const isLast = read < batchBytes
    emit(seal(plaintext.subarray(0, read), isLast, sealed))
    if (isLast) return bytesIn
  }
}
