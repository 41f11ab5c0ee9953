import { asBuffer } from './frames.js'

/** Reads a byte source into large contiguous buffers: frames are parsed in place and only the tail of a
 *  partial frame is ever copied. */
export class ChunkReader {
  buffer: Buffer
  position = 0
  bytesRead: number
  ended = false
  constructor(
    first: Buffer,
    private readonly iterator: AsyncIterator<Uint8Array>,
    private readonly readTarget: number,
  ) {
    this.buffer = first
    this.bytesRead = first.length
  }
  get available(): number {
    return this.buffer.length - this.position
  }
  /** Make at least `needed` bytes available (reading up to `readTarget` while at it); false at end of input. */
  async ensure(needed: number): Promise<boolean> {
    if (this.available >= needed) return true
    if (this.ended) return false
    // Copy the unread tail: the source may reuse its buffers once asked for more.
    const parts: Buffer[] = this.available > 0 ? [Buffer.from(this.buffer.subarray(this.position))] : []
    let total = this.available
    const want = Math.max(needed, this.readTarget)
    while (total < want) {
      const next = await this.iterator.next()
      if (next.done) {
        this.ended = true
        break
      }
      if (next.value.byteLength === 0) continue
      parts.push(asBuffer(next.value))
      total += next.value.byteLength
      this.bytesRead += next.value.byteLength
    }
    this.buffer = parts.length === 1 ? parts[0] : Buffer.concat(parts, total)
    this.position = 0
    return total >= needed
  }
}
