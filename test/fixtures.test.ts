// The named fixtures are the spec: every good_* message decrypts to its recorded plaintext, every fail_*
// message is refused with its recorded cause, leaving nothing behind. Cases: fixtures/messages/cases.json
// (regenerate with scripts/make-fixtures.mjs).
import { describe, expect, it } from 'vitest'
import { existsSync, readFileSync, readdirSync } from 'node:fs'
import { createHash } from 'node:crypto'
import { join } from 'node:path'
import { ROOT, runCli, tempDir } from './helpers/cli.js'

const dir = join(ROOT, 'fixtures', 'messages')
const cases: Record<string, { note: string; decrypt: string[]; expect: string; plaintext_sha256?: string; plaintext_size?: number }> = JSON.parse(
  readFileSync(join(dir, 'cases.json'), 'utf8'),
)
const withKeys = (args: string[]) => args.map((a) => a.replace('KEY_A', join(dir, 'key-a.bin')).replace('KEY_B', join(dir, 'key-b.bin')))

describe('fixtures/messages', () => {
  it('has a case for every message file and a message for every case', () => {
    const messages = readdirSync(dir).filter((f) => f.endsWith('.msg')).map((f) => f.slice(0, -4)).sort()
    expect(messages).toEqual(Object.keys(cases).sort())
    expect(messages.some((m) => m.startsWith('good_'))).toBe(true)
    expect(messages.some((m) => m.startsWith('fail_'))).toBe(true)
  })

  // pool is the default engine on more than one core; name it, so that a one-core machine runs it too.
  for (const engine of ['pool', 'js', 'sdk']) {
    describe(`engine ${engine}`, () => {
      for (const [name, spec] of Object.entries(cases)) {
        it(`${name}: ${spec.note}`, async () => {
          const work = tempDir()
          const output = join(work, 'out')
          const mode = spec.decrypt.includes('--decrypt-unsigned') ? [] : ['-d']
          const result = await runCli([...mode, '-i', join(dir, `${name}.msg`), '-o', output, ...withKeys(spec.decrypt), '-S', '--engine', engine])
          if (name.startsWith('good_')) {
            expect(result.stderr).not.toMatch(/error/)
            expect(result.code).toBe(0)
            const plaintext = readFileSync(output)
            expect(plaintext.length).toBe(spec.plaintext_size)
            expect(createHash('sha256').update(plaintext).digest('hex')).toBe(spec.plaintext_sha256)
          } else {
            expect(result.code).toBe(1)
            const errorLine = result.stderr.split('\n').find((l) => l.startsWith('envcrypt: error:'))
            expect(errorLine).toContain(`${name}.msg`)
            expect(errorLine).toMatch(new RegExp(spec.expect, 'i'))
            expect(existsSync(output)).toBe(false)
            expect(readdirSync(work)).toEqual([])
          }
        })
      }
    })
  }
})
