// How a pool worker writes an output file (io.ts writeTemporaryFile) and reads an input (readFile): the
// temporary is created beside the output with mode 0600, gets the output's mode, and is renamed into place
// only when the writer succeeded; a failure, an interruption or a refused no-clobber commit leaves the
// directory as it was. And the main-thread side: an interrupted run's batch creates nothing.
import { describe, expect, it } from 'vitest'
import { closeSync, existsSync, openSync, readdirSync, readFileSync, statSync, writeFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { writeTemporaryFile, WriteStopped, type TemporaryTarget } from '../src/store/local.js'
import runFileBatch, { readFile, type EncryptFileTask } from '../src/message/pool-worker.js'
import { ownBytes } from '../src/message/pool.js'
import { tempDir } from './helpers/cli.js'

const notStopped = () => false

function targetIn(dir: string, overrides: Partial<TemporaryTarget> = {}): TemporaryTarget {
  return { temporaryPath: join(dir, '.envcrypt-tmp-test'), finalPath: join(dir, 'out.bin'), mode: 0o640, fsync: false, noClobber: false, ...overrides }
}

describe('writeTemporaryFile: the worker side of an atomic output', () => {
  it('writes through a 0600 temporary, then gives the output its mode and renames it into place', async () => {
    const dir = tempDir()
    const target = targetIn(dir)
    const modeWhileWriting = await writeTemporaryFile(target, notStopped, async (fd) => {
      writeSync(fd, 'hello')
      expect(existsSync(target.finalPath)).toBe(false)
      return statSync(target.temporaryPath).mode & 0o777
    })
    expect(modeWhileWriting).toBe(0o600)
    expect(readFileSync(target.finalPath, 'utf8')).toBe('hello')
    expect(statSync(target.finalPath).mode & 0o777).toBe(0o640)
    expect(readdirSync(dir)).toEqual(['out.bin'])
  })

  it('with fsync, the same result (file and directory are synced before and after the rename)', async () => {
    const dir = tempDir()
    const target = targetIn(dir, { fsync: true })
    await writeTemporaryFile(target, notStopped, async (fd) => writeSync(fd, 'synced'))
    expect(readFileSync(target.finalPath, 'utf8')).toBe('synced')
    expect(readdirSync(dir)).toEqual(['out.bin'])
  })

  it('a failing writer leaves neither the temporary nor an output, and an existing output untouched', async () => {
    const dir = tempDir()
    const target = targetIn(dir)
    writeFileSync(target.finalPath, 'previous')
    await expect(
      writeTemporaryFile(target, notStopped, async (fd) => {
        writeSync(fd, 'partial')
        throw new Error('authentication failed')
      }),
    ).rejects.toThrow('authentication failed')
    expect(readdirSync(dir)).toEqual(['out.bin'])
    expect(readFileSync(target.finalPath, 'utf8')).toBe('previous')
  })

  it('refuses to start on a temporary name that already exists (O_EXCL), and leaves that file alone', async () => {
    const dir = tempDir()
    const target = targetIn(dir)
    writeFileSync(target.temporaryPath, 'someone else')
    await expect(writeTemporaryFile(target, notStopped, async () => undefined)).rejects.toThrow(/EEXIST/)
    expect(readFileSync(target.temporaryPath, 'utf8')).toBe('someone else')
  })

  it('an interrupted run (stop flag set once the file exists) removes the temporary and commits nothing', async () => {
    const dir = tempDir()
    const target = targetIn(dir)
    let calls = 0
    const stoppedOnSecondCheck = () => ++calls >= 2
    await expect(writeTemporaryFile(target, stoppedOnSecondCheck, async (fd) => writeSync(fd, 'done'))).rejects.toBeInstanceOf(WriteStopped)
    expect(readdirSync(dir)).toEqual([])
    await expect(writeTemporaryFile(target, () => true, async () => expect.unreachable('writer ran after the stop'))).rejects.toBeInstanceOf(WriteStopped)
    expect(readdirSync(dir)).toEqual([])
  })

  it('noClobber: links into place when the output is new, and fails naming it when it exists', async () => {
    const dir = tempDir()
    const target = targetIn(dir, { noClobber: true })
    await writeTemporaryFile(target, notStopped, async (fd) => writeSync(fd, 'first'))
    expect(readFileSync(target.finalPath, 'utf8')).toBe('first')
    await expect(writeTemporaryFile(target, notStopped, async (fd) => writeSync(fd, 'second'))).rejects.toThrow(
      `output ${target.finalPath} already exists (not overwritten)`,
    )
    expect(readFileSync(target.finalPath, 'utf8')).toBe('first')
    expect(readdirSync(dir)).toEqual(['out.bin'])
  })
})

describe('readFile: reads sized to the expected file size', () => {
  const cases: Array<[string, number, number | undefined]> = [
    ['empty, size known', 0, 0],
    ['4 KiB, size known', 4096, 4096],
    ['3 MiB + 5, size known', 3 * 1024 * 1024 + 5, 3 * 1024 * 1024 + 5],
    ['size unknown', 2 * 1024 * 1024 + 1, undefined],
    ['larger than expected (the file grew)', 300_000, 1000],
    ['smaller than expected (the file shrank)', 1000, 300_000],
  ]
  for (const [name, actual, expected] of cases) {
    it(name, () => {
      const dir = tempDir()
      const path = join(dir, 'input')
      const content = randomBytes(actual)
      writeFileSync(path, content)
      const fd = openSync(path, 'r')
      try {
        const chunks = [...readFile(fd, expected, notStopped)]
        expect(Buffer.concat(chunks).equals(content)).toBe(true)
        for (const chunk of chunks) expect(chunk.length).toBeLessThanOrEqual(1024 * 1024)
        // The file that grew is read in growing chunks, not one byte at a time.
        if (actual > (expected ?? Infinity)) expect(chunks.length).toBeLessThan(5)
      } finally {
        closeSync(fd)
      }
    })
  }

  it('stops at the next read once the run is interrupted', () => {
    const dir = tempDir()
    const path = join(dir, 'input')
    writeFileSync(path, randomBytes(3 * 1024 * 1024))
    const fd = openSync(path, 'r')
    try {
      let reads = 0
      expect(() => [...readFile(fd, undefined, () => ++reads > 1)]).toThrow(WriteStopped)
    } finally {
      closeSync(fd)
    }
  })
})

describe('a worker batch', () => {
  it('of an interrupted run creates no file and reports every task as interrupted, zeroing its data key', async () => {
    const dir = tempDir()
    writeFileSync(join(dir, 'in.bin'), 'plaintext')
    const dataKey = randomBytes(32)
    const task: EncryptFileTask = {
      kind: 'encrypt',
      inputPath: join(dir, 'in.bin'),
      output: targetIn(dir, { temporaryPath: join(dir, '.envcrypt-tmp-batch') }),
      suiteId: 0x0478,
      encryptionContext: {},
      encryptedDataKeys: [{ providerId: 'p', providerInfo: 'i', encryptedDataKey: new Uint8Array(8) }],
      dataKey,
      frameLength: 4096,
      plaintextLength: 9,
    }
    const stop = new Int32Array(new SharedArrayBuffer(4))
    Atomics.store(stop, 0, 1)
    const results = await runFileBatch({ tasks: [task, { ...task, dataKey: randomBytes(32) }], stop })
    expect(results).toEqual([
      { ok: false, error: 'interrupted', integrity: false, interrupted: true },
      { ok: false, error: 'interrupted', integrity: false, interrupted: true },
    ])
    expect(readdirSync(dir)).toEqual(['in.bin'])
    expect(dataKey.every((byte) => byte === 0)).toBe(true)
  })
})

describe('ownBytes: what is posted to a worker is copied whole', () => {
  it('a slice of a larger buffer is copied into a buffer of its own size; an exact one is passed as is', () => {
    const pooled = Buffer.from('a 16-byte string') // a slice of Node's 8 KiB pool
    expect(pooled.buffer.byteLength).toBeGreaterThan(16)
    const own = ownBytes(pooled)
    expect(own.buffer.byteLength).toBe(16)
    expect(Buffer.from(own).equals(pooled)).toBe(true)
    const exact = new Uint8Array(16)
    expect(ownBytes(exact)).toBe(exact)
  })
})
