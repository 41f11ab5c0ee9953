// The whole engine-js differential suite again, on the JavaScript frame loop (ENVCRYPT_NATIVE=0): when the
// native kernel built, test/engine-js.test.ts exercises it, and this file keeps the fallback tested too.
// native.ts reads the variable on every call, so setting it before any test runs is enough.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { nativeActive } from '../src/message/native.js'

const previous = process.env.ENVCRYPT_NATIVE
process.env.ENVCRYPT_NATIVE = '0'
beforeAll(() => {
  process.env.ENVCRYPT_NATIVE = '0'
})
afterAll(() => {
  if (previous === undefined) delete process.env.ENVCRYPT_NATIVE
  else process.env.ENVCRYPT_NATIVE = previous
})

describe('ENVCRYPT_NATIVE=0', () => {
  it('forces the JavaScript frame loop', () => {
    expect(nativeActive()).toBe(false)
  })
})

await import('./engine-js.test.js')
