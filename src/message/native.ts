// The optional native frame kernel (native/frames.cc, built by node-gyp at install by
// scripts/build-native.mjs). It encrypts or decrypts all frames of a batch in one call with one reused
// OpenSSL context, ~1.5 us per 4 KiB frame against ~12 us for the JavaScript loop.
//
// Optional by design: if it did not build (no compiler, no headers offline), or ENVCRYPT_NATIVE=0, the
// engine uses its JavaScript loop, which writes the same bytes. Workers load it on their own (N-API addons
// are context-aware), so the pool engine gets it too.
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

export interface FrameKernel {
  /** Encrypt `plaintext` as frames into `out` from `outOffset` (layout in frames.cc); returns bytes written. */
  encryptFrames(
    key: Buffer,
    plaintext: Buffer,
    out: Buffer,
    outOffset: number,
    frameAadPrefix: Buffer,
    finalFrameAadPrefix: Buffer,
    firstSequenceNumber: number,
    frameLength: number,
    isLast: boolean,
  ): number
  /** Decrypt the frames described by `frames` (5 numbers each: ivOffset, ciphertextOffset, contentLength,
   *  sequenceNumber, isFinal) from `input` into `out`, back to back; returns the index of the first frame
   *  whose tag failed, or -1. */
  decryptFrames(key: Buffer, input: Buffer, frames: Float64Array, out: Buffer, frameAadPrefix: Buffer, finalFrameAadPrefix: Buffer): number
  /** Open consecutive regular frames from input[start, end) whose sequence numbers run from
   *  `firstSequenceNumber`, writing their plaintext back to back from out[outOffset]; stops without judging at
   *  the first spot that is not such a frame (final frame, another sequence number, a frame not wholly in the
   *  range, or no room left in `out`). Returns the frames opened, or -(i + 1) when the i-th frame's tag failed. */
  openRegularFrames(
    key: Buffer,
    input: Buffer,
    start: number,
    end: number,
    firstSequenceNumber: number,
    frameLength: number,
    out: Buffer,
    outOffset: number,
    frameAadPrefix: Buffer,
  ): number
  /** AES-GCM tag of an empty plaintext with `aad`: the header authentication tag. */
  gcmTag(key: Buffer, iv: Buffer, aad: Buffer): Buffer
}

/** Where the package is: dist/native.js and src/native.ts both sit one level below it. */
const PACKAGE_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..')

let loaded: { kernel?: FrameKernel; error?: string } | undefined

function load(): { kernel?: FrameKernel; error?: string } {
  const require = createRequire(import.meta.url)
  try {
    // node-gyp-build finds build/Release (or prebuilds/) and throws when there is nothing to load.
    const nodeGypBuild = require('node-gyp-build') as (dir: string) => unknown
    const addon = nodeGypBuild(PACKAGE_ROOT) as Partial<FrameKernel>
    if (typeof addon.encryptFrames !== 'function' || typeof addon.decryptFrames !== 'function' || typeof addon.openRegularFrames !== 'function' || typeof addon.gcmTag !== 'function') {
      return { error: 'the native addon does not export the frame kernel' }
    }
    return { kernel: addon as FrameKernel }
  } catch (err) {
    return { error: (err instanceof Error ? err.message : String(err)).split('\n')[0] }
  }
}

/** The native kernel when it built and ENVCRYPT_NATIVE is not "0"; checked on every call (cheap) so tests
 *  can switch paths in one process. */
export function nativeKernel(): FrameKernel | undefined {
  if (process.env.ENVCRYPT_NATIVE === '0') return undefined
  loaded ??= load()
  return loaded.kernel
}

/** Whether the frame loop runs natively in this process right now. */
export function nativeActive(): boolean {
  return nativeKernel() !== undefined
}

/** Why the addon is not available (undefined when it loaded or was not tried because ENVCRYPT_NATIVE=0). */
export function nativeLoadError(): string | undefined {
  if (process.env.ENVCRYPT_NATIVE === '0') return undefined
  loaded ??= load()
  return loaded.error
}

/** Counts per process, for tests and diagnostics: messages whose frames went through the kernel, and
 *  messages that fell back to JavaScript because the derived key did not reproduce the SDK's header tag
 *  (which would be a bug in the key derivation; the output is still correct, from the JavaScript loop). */
export const nativeStats = { messages: 0, fallbacks: 0 }
