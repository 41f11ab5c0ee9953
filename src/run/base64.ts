// --encode/--decode: base64 around the message stream, as the official CLI's --encode/--decode.
import { PassThrough, Transform, type Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { ByteSource } from '../message/engine.js'
import { EnvcryptError } from '../errors.js'

export async function* base64Decode(source: ByteSource): AsyncGenerator<Buffer> {
  let carry = ''
  for await (const chunk of source) {
    const text = carry + Buffer.from(chunk).toString('latin1').replace(/\s+/g, '')
    const usable = text.length - (text.length % 4)
    carry = text.slice(usable)
    if (usable > 0) {
      const piece = text.slice(0, usable)
      if (!/^[A-Za-z0-9+/]*={0,2}$/.test(piece)) throw new EnvcryptError('--decode: input is not valid base64')
      yield Buffer.from(piece, 'base64')
    }
  }
  if (carry.length > 0) throw new EnvcryptError('--decode: base64 input is truncated')
}

/** A Writable that base64-encodes into `target`, ending it when ended itself. */
export function base64EncodeInto(target: Writable): { stream: Writable; done: Promise<void> } {
  let carry = Buffer.alloc(0)
  const encoder = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      const data = carry.length ? Buffer.concat([carry, chunk]) : chunk
      const usable = data.length - (data.length % 3)
      carry = Buffer.from(data.subarray(usable))
      callback(null, usable ? data.subarray(0, usable).toString('base64') : undefined)
    },
    flush(callback) {
      callback(null, carry.length ? carry.toString('base64') : undefined)
    },
  })
  const through = new PassThrough()
  const done = pipeline(through, encoder, target)
  done.catch(() => undefined)
  return { stream: through, done }
}
