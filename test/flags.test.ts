// Long-flag abbreviations and "did you mean" suggestions (src/cli/flags.ts), as argparse treats them.
import { describe, expect, it } from 'vitest'
import { expandAbbreviations, unknownFlagsMessage } from '../src/cli/flags.js'

const KNOWN = ['encrypt', 'encryption-context', 'encode', 'metadata-output', 'overwrite', 'overwrite-metadata', 'no-overwrite', 'recursive', 'suffix', 'wrapping-keys', 'e', 'r']

describe('expandAbbreviations', () => {
  it('expands a unique prefix, keeps exact names, =values, short flags, values and everything after --', () => {
    expect(expandAbbreviations(['--recurs', '--meta', 'm.json', '--wrap=key=k', '-e', 'x', '--encrypt', '--', '--su'], KNOWN, ['overwrite']))
      .toEqual(['--recursive', '--metadata-output', 'm.json', '--wrapping-keys=key=k', '-e', 'x', '--encrypt', '--', '--su'])
  })

  it('leaves --no-X negations of known flags alone, and a prefix of a flag excluded from abbreviation goes to the others', () => {
    expect(expandAbbreviations(['--no-overwrite', '--no-recursive', '--over'], KNOWN, ['overwrite'])).toEqual(['--no-overwrite', '--no-recursive', '--overwrite-metadata'])
  })

  it('refuses an ambiguous prefix, naming every candidate', () => {
    expect(() => expandAbbreviations(['--enc'], KNOWN)).toThrow('ambiguous option: --enc could match --encrypt, --encryption-context, --encode')
  })

  it('refuses unknown flags all at once, suggesting the closest known flag only when it is close', () => {
    expect(() => expandAbbreviations(['--sufix', 'x', '--colour'], KNOWN)).toThrow('Unknown arguments: --sufix (did you mean --suffix?), --colour')
    expect(unknownFlagsMessage(['recusive'], KNOWN)).toBe('Unknown argument: --recusive (did you mean --recursive?)')
    expect(unknownFlagsMessage(['x'], KNOWN)).toBe('Unknown argument: -x')
    expect(unknownFlagsMessage(['metadata'], KNOWN)).toBe('Unknown argument: --metadata')
  })
})
