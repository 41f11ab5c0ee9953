// The decrypt frame loop: header authentication, frames (JavaScript or native kernel), signature footer,
// given the materials. Plaintext is written only once authenticated.
import type { Writable } from 'node:stream'
import { MessageFormat, getDecryptionHelper, type NodeDecryptionMaterial } from '@aws-crypto/material-management-node'
import { ContentType, decodeBodyHeader, deserializeSignature, type BodyHeader, type HeaderInfo } from '@aws-crypto/serialize'
import { endOutput, writeTo, type MessageResult, type ParsedHeader } from './engine.js'
import { EnvcryptError, IntegrityError } from '../errors.js'
import {
  BATCH_BYTES,
  BodyAad,
  FINAL_FRAME_AAD,
  FRAME_AAD,
  SINGLE_BLOCK_AAD,
  asBuffer,
  errorMessage,
  nativeFramesFor,
  worthNative,
  type NativeFrames,
} from './frames.js'
import { ChunkReader } from './chunk-reader.js'
import { FileChunkReader, FileInput, FileOutput } from './file-io.js'

/** The largest signature footer we buffer: a 2-byte length plus at most 65,535 bytes. */
const MAX_FOOTER_BYTES = 2 + 0xffff

export interface DecryptBody {
  parsed: ParsedHeader
  /** The message from its first byte: at least the header (with its auth); may hold body bytes too. */
  headerBytes: Buffer
  /** The rest of the message after `headerBytes`: a byte source, or a local file read into reused buffers
   *  (the output is then a FileOutput). */
  rest: AsyncIterator<Uint8Array> | FileInput
}

export interface DecryptFrameOptions {
  maxBodySize?: number
  /** The message's size, if the caller knows it: a message of few frames stays on the JavaScript loop. */
  expectedBytes?: number
  /** Ciphertext bytes to gather before decrypting a batch; defaults to BATCH_BYTES. */
  batchBytes?: number
  /** See DecryptMessageOptions.outputKeepsNothing. */
  outputKeepsNothing?: boolean
}

const truncated = () => new IntegrityError('message is truncated: input ended before the final frame')

function malformed(err: unknown): IntegrityError {
  return new IntegrityError(`malformed message body: ${errorMessage(err)}`)
}

type DecryptHelper = ReturnType<typeof getDecryptionHelper>
type DecipherFactory = ReturnType<DecryptHelper['getDecipherInfo']>
type Verifier = ReturnType<NonNullable<DecryptHelper['getVerify']>>

/** What the body and footer steps of one message's decryption share. */
interface DecryptState {
  reader: ChunkReader | FileChunkReader
  /** Room for a batch's plaintext: the file output's reused buffer (written synchronously before the next
   *  batch), or a fresh buffer for a stream, which may hold on to it. */
  plaintextBuffer: (size: number) => Buffer
  headerInfo: HeaderInfo
  messageId: Uint8Array
  getDecipher: DecipherFactory
  /** The signature hash (signed suites): fed every byte of the message before the footer. */
  verify: Verifier | undefined
  ivLength: number
  tagLength: number
  maxBodySize: number | undefined
  /** An unframed body's plaintext may go to the output before its tag is checked (verify's sinks keep nothing). */
  outputKeepsNothing: boolean
  write: (chunk: Buffer) => Promise<void>
}

/** Header step of decryptWithMaterials: the key commitment check (committing suites) and the header
 *  authentication tag; returns the decipher factory for the body. */
function authenticateHeader(helper: DecryptHelper, parsed: ParsedHeader, rawHeader: Buffer): DecipherFactory {
  const { header } = parsed
  let getDecipher: DecipherFactory
  try {
    getDecipher = helper.getDecipherInfo(header.messageId, 'suiteData' in header ? header.suiteData : undefined)
  } catch (err) {
    if (/Commitment does not match/.test(errorMessage(err))) {
      throw new IntegrityError('key commitment check failed: the message was altered or the wrong key was used')
    }
    throw err
  }
  try {
    const headerAuth = getDecipher(parsed.headerAuth.iv)
    headerAuth.setAAD(rawHeader)
    headerAuth.setAuthTag(asBuffer(parsed.headerAuth.tag))
    headerAuth.update(Buffer.alloc(0))
    headerAuth.final()
  } catch {
    throw new IntegrityError('header authentication failed: the message header was altered or the wrong key was used')
  }
  return getDecipher
}

function decodeAt(state: DecryptState, position: number): BodyHeader | false {
  try {
    return decodeBodyHeader(state.reader.buffer, state.headerInfo, position)
  } catch (err) {
    throw malformed(err)
  }
}

function checkBodySize(state: DecryptState, contentLength: number): void {
  if (state.maxBodySize && contentLength > state.maxBodySize) {
    throw new EnvcryptError(`frame of ${contentLength} bytes exceeds the maximum body size ${state.maxBodySize} (--max-length)`)
  }
}

/** The next complete frame at the reader's position, checked (body size, sequence order), or how many bytes
 *  from the position must be buffered before it can be read. Shared by the JavaScript and native loops. */
function nextFrame(state: DecryptState, expectedSequenceNumber: number): { frame: BodyHeader; contentStart: number; frameEnd: number } | { needed: number } {
  const { reader } = state
  const frame = decodeAt(state, reader.position)
  if (!frame) return { needed: reader.available + 1 }
  checkBodySize(state, frame.contentLength)
  if (frame.sequenceNumber !== expectedSequenceNumber) {
    throw new IntegrityError(`frames out of order: expected frame ${expectedSequenceNumber}, found ${frame.sequenceNumber}`)
  }
  const contentStart = frame.readPos
  const frameEnd = contentStart + frame.contentLength + state.tagLength
  if (frameEnd > reader.buffer.length) return { needed: frameEnd - reader.position }
  return { frame, contentStart, frameEnd }
}

/** Body step for an unframed message: one "frame" covering the whole body, possibly larger than memory
 *  likes; stream it through one decipher and hold the plaintext until the tag verifies (as the SDK does),
 *  unless the output keeps nothing (verify), which then gets it as it is decrypted. */
async function decryptSingleBlock(state: DecryptState): Promise<void> {
  const { reader, verify, ivLength, tagLength } = state
  if (!(await reader.ensure(ivLength + 8))) throw truncated()
  const bodyHeader = decodeAt(state, reader.position)
  if (!bodyHeader) throw truncated()
  checkBodySize(state, bodyHeader.contentLength)
  verify?.update(reader.buffer.subarray(reader.position, bodyHeader.readPos))
  reader.position = bodyHeader.readPos
  const decipher = state.getDecipher(bodyHeader.iv)
  decipher.setAAD(new BodyAad(state.messageId, SINGLE_BLOCK_AAD).for(1, bodyHeader.contentLength))
  const plaintext: Buffer[] = []
  let remaining = bodyHeader.contentLength
  while (remaining > 0) {
    if (!(await reader.ensure(1))) throw truncated()
    const take = Math.min(remaining, reader.available)
    const ciphertext = reader.buffer.subarray(reader.position, reader.position + take)
    verify?.update(ciphertext)
    const piece = decipher.update(ciphertext)
    if (state.outputKeepsNothing) await state.write(piece)
    else plaintext.push(piece)
    reader.position += take
    remaining -= take
  }
  if (!(await reader.ensure(tagLength))) throw truncated()
  const tag = reader.buffer.subarray(reader.position, reader.position + tagLength)
  verify?.update(tag)
  reader.position += tagLength
  decipher.setAuthTag(tag)
  try {
    plaintext.push(decipher.final())
  } catch {
    throw new IntegrityError('body authentication failed: the message was altered or the wrong key was used')
  }
  for (const piece of plaintext) if (piece.length > 0) await state.write(piece)
}

/** Body step for a framed message on the JavaScript loop: every complete frame in the buffer is decrypted
 *  into one plaintext buffer, written once its frames are verified. */
async function decryptFramesJs(state: DecryptState): Promise<void> {
  const { reader, verify, tagLength } = state
  const frameAad = new BodyAad(state.messageId, FRAME_AAD)
  const finalFrameAad = new BodyAad(state.messageId, FINAL_FRAME_AAD)
  let expectedSequenceNumber = 1
  for (;;) {
    const batchStart = reader.position
    let plaintext: Buffer | undefined
    let plaintextLength = 0
    let finalSeen = false
    let needed: number
    for (;;) {
      const next = nextFrame(state, expectedSequenceNumber)
      if ('needed' in next) {
        needed = next.needed
        break
      }
      const { frame, contentStart, frameEnd } = next
      const decipher = state.getDecipher(frame.iv)
      decipher.setAAD((frame.isFinalFrame ? finalFrameAad : frameAad).for(frame.sequenceNumber, frame.contentLength))
      decipher.setAuthTag(reader.buffer.subarray(frameEnd - tagLength, frameEnd))
      const clear = decipher.update(reader.buffer.subarray(contentStart, frameEnd - tagLength))
      try {
        decipher.final()
      } catch {
        throw new IntegrityError(`frame ${frame.sequenceNumber} failed authentication: the message was altered or the wrong key was used`)
      }
      if (clear.length > 0) {
        plaintext ??= state.plaintextBuffer(reader.buffer.length - reader.position)
        plaintextLength += clear.copy(plaintext, plaintextLength)
      }
      reader.position = frameEnd
      expectedSequenceNumber += 1
      if (frame.isFinalFrame) {
        finalSeen = true
        break
      }
    }
    if (reader.position > batchStart) verify?.update(reader.buffer.subarray(batchStart, reader.position))
    if (plaintextLength > 0) await state.write(plaintext!.subarray(0, plaintextLength))
    if (finalSeen) return
    if (!(await reader.ensure(needed!))) throw truncated()
  }
}

/** The kernel opens the run of regular frames in sequence from the reader's position, in one call, into
 *  `plaintext`; it stops, without judging, where anything else begins. Returns the frames opened. */
function openRegularRun(state: DecryptState, { kernel, key }: NativeFrames, frameAadPrefix: Buffer, firstSequenceNumber: number, plaintext: Buffer): number {
  const { reader } = state
  const { frameLength } = state.headerInfo.messageHeader
  const opened = kernel.openRegularFrames(key, reader.buffer, reader.position, reader.buffer.length, firstSequenceNumber, frameLength, plaintext, 0, frameAadPrefix)
  if (opened < 0) {
    throw new IntegrityError(`frame ${firstSequenceNumber - opened - 1} failed authentication: the message was altered or the wrong key was used`)
  }
  reader.position += opened * (4 + state.ivLength + frameLength + state.tagLength)
  return opened
}

/** decryptFramesJs with the kernel. First the kernel opens the buffered run of regular frames in sequence
 *  in one call (openRegularRun); what follows (the final frame, or anything malformed or out of order) is
 *  parsed and checked here exactly as in decryptFramesJs (the SDK's decodeBodyHeader, sequence order, body
 *  size), then decrypted and verified in one more call. */
async function decryptFramesNative(state: DecryptState, native: NativeFrames): Promise<void> {
  const { reader, verify, ivLength } = state
  const { kernel, key } = native
  const frameAad = new BodyAad(state.messageId, FRAME_AAD)
  const finalFrameAad = new BodyAad(state.messageId, FINAL_FRAME_AAD)
  // 5 numbers per frame (see FrameKernel.decryptFrames); grows when a batch holds more frames.
  let descriptors = new Float64Array(5 * 512)
  let expectedSequenceNumber = 1
  for (;;) {
    const batchStart = reader.position
    // Never more plaintext than the ciphertext buffered.
    const plaintext = state.plaintextBuffer(reader.available)
    const opened = openRegularRun(state, native, frameAad.prefix, expectedSequenceNumber, plaintext)
    expectedSequenceNumber += opened
    const openedLength = opened * state.headerInfo.messageHeader.frameLength
    let frames = 0
    let plaintextLength = openedLength
    let finalSeen = false
    let needed: number | undefined
    // Verify what was collected so far: a tag failure in an earlier frame is reported before a parse
    // error in a later one, as the frame-by-frame loop does.
    const verifyCollected = (): void => {
      const failed = kernel.decryptFrames(key, reader.buffer, descriptors.subarray(0, frames * 5), plaintext.subarray(openedLength), frameAad.prefix, finalFrameAad.prefix)
      if (failed >= 0) {
        throw new IntegrityError(`frame ${descriptors[failed * 5 + 3]} failed authentication: the message was altered or the wrong key was used`)
      }
    }
    try {
      for (;;) {
        const next = nextFrame(state, expectedSequenceNumber)
        if ('needed' in next) {
          needed = next.needed
          break
        }
        const { frame, contentStart, frameEnd } = next
        if ((frames + 1) * 5 > descriptors.length) {
          const grown = new Float64Array(descriptors.length * 2)
          grown.set(descriptors)
          descriptors = grown
        }
        // The IV sits right before the content (regular frames) or before the 4-byte content length.
        const ivOffset = contentStart - ivLength - (frame.isFinalFrame ? 4 : 0)
        const at = frames * 5
        descriptors[at] = ivOffset
        descriptors[at + 1] = contentStart
        descriptors[at + 2] = frame.contentLength
        descriptors[at + 3] = frame.sequenceNumber
        descriptors[at + 4] = frame.isFinalFrame ? 1 : 0
        frames += 1
        plaintextLength += frame.contentLength
        reader.position = frameEnd
        expectedSequenceNumber += 1
        if (frame.isFinalFrame) {
          finalSeen = true
          break
        }
      }
    } catch (err) {
      if (frames > 0) verifyCollected()
      throw err
    }
    if (frames > 0) verifyCollected()
    if (reader.position > batchStart) verify?.update(reader.buffer.subarray(batchStart, reader.position))
    if (plaintextLength > 0) await state.write(plaintext.subarray(0, plaintextLength))
    if (finalSeen) return
    if (!(await reader.ensure(needed!))) throw truncated()
  }
}

/** Footer step: the signature for signed suites; nothing at all otherwise. */
async function checkFooter(reader: ChunkReader | FileChunkReader, verify: Verifier | undefined): Promise<void> {
  if (verify) {
    await reader.ensure(MAX_FOOTER_BYTES + 1)
    if (reader.available > MAX_FOOTER_BYTES) throw new IntegrityError('unexpected data after the signature footer')
    const footer = reader.buffer.subarray(reader.position)
    let signature: Uint8Array
    try {
      signature = deserializeSignature(footer)
    } catch {
      throw new IntegrityError(footer.length === 0 ? 'signature footer missing: the message is truncated' : 'malformed signature footer')
    }
    reader.position = reader.buffer.length
    if (!verify.awsCryptoVerify(asBuffer(signature))) {
      throw new IntegrityError('signature verification failed: the message was altered')
    }
  } else if (await reader.ensure(1)) {
    // The SDK ignores bytes after the final frame of an unsigned message; they are not authenticated,
    // so refuse them rather than silently drop them.
    throw new IntegrityError('unexpected data after the final frame')
  }
}

/** Authenticate the header, decrypt and verify every frame, verify the signature, then end `output`.
 *  Plaintext of a frame is written only after its tag is verified; `output` is ended only after the footer
 *  signature is verified. Disposes the material's data key. */
export async function decryptWithMaterials(
  material: NodeDecryptionMaterial,
  body: DecryptBody,
  output: Writable | FileOutput,
  options: DecryptFrameOptions = {},
): Promise<MessageResult> {
  const helper = getDecryptionHelper(material)
  let native: NativeFrames | undefined
  try {
    const { parsed, headerBytes } = body
    const { header } = parsed
    const suite = material.suite
    const tagLength = suite.tagLength / 8
    const headerAuthLength = (header.version === MessageFormat.V1 ? suite.ivLength : 0) + tagLength
    const rawHeader = headerBytes.subarray(0, parsed.headerLength - headerAuthLength)
    const getDecipher = authenticateHeader(helper, parsed, rawHeader)
    const verify = helper.getVerify?.()
    verify?.update(headerBytes.subarray(0, parsed.headerLength))
    let bytesOut = 0
    const { rest } = body
    const first = headerBytes.subarray(parsed.headerLength)
    const readTarget = options.batchBytes ?? BATCH_BYTES
    if (rest instanceof FileInput && !(output instanceof FileOutput)) throw new Error('internal: a file input needs a file output')
    const state: DecryptState = {
      reader: rest instanceof FileInput ? new FileChunkReader(first, rest.fd, readTarget, rest.buffers, rest.checkStop) : new ChunkReader(first, rest, readTarget),
      plaintextBuffer: (size) => (output instanceof FileOutput ? output.buffers.get('plaintext', size).subarray(0, size) : Buffer.allocUnsafe(size)),
      headerInfo: { messageHeader: header, algorithmSuite: suite } as HeaderInfo,
      messageId: header.messageId,
      getDecipher,
      verify,
      ivLength: suite.ivLength,
      tagLength,
      maxBodySize: options.maxBodySize,
      outputKeepsNothing: options.outputKeepsNothing ?? false,
      write: async (chunk: Buffer) => {
        bytesOut += chunk.length
        if (output instanceof FileOutput) output.write(chunk)
        else await writeTo(output, chunk)
      },
    }
    if (header.contentType === ContentType.NO_FRAMING) {
      await decryptSingleBlock(state)
    } else {
      if (worthNative(options.expectedBytes, header.frameLength)) native = nativeFramesFor(material, header.messageId, parsed.headerAuth.iv, rawHeader, parsed.headerAuth.tag)
      await (native ? decryptFramesNative(state, native) : decryptFramesJs(state))
    }
    await checkFooter(state.reader, verify)
    if (output instanceof FileOutput) output.flush()
    else await endOutput(output)
    return { header, headerAuth: parsed.headerAuth, bytesIn: parsed.headerLength + state.reader.bytesRead, bytesOut }
  } finally {
    native?.key.fill(0)
    helper.dispose()
  }
}
