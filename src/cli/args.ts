// Argument pre-processing that yargs does not do: `@argfile` expansion (shlex-style lines, `#` comments,
// `$VAR` and `~` expanded, as aws-encryption-cli) and keeping `-w`/`-c`/`--caching` groups apart
// (yargs would merge repeated array flags into one list, losing which keys belong together).
import { readFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { split as shlexSplit } from 'shlex'
import { UsageError } from '../errors.js'

const GROUP_SEPARATOR = '\u001f'
const GROUPED_FLAGS: Record<string, string> = {
  '-w': 'wrapping-keys',
  '--wrapping-keys': 'wrapping-keys',
  '-W': 'from-wrapping-keys',
  '--from-wrapping-keys': 'from-wrapping-keys',
  '-c': 'encryption-context',
  '--encryption-context': 'encryption-context',
  '--caching': 'caching',
  // aws-encryption-cli 1.x spelled -w as -m/--master-keys (the AWS Security blog's caching walkthrough uses it).
  '-m': 'wrapping-keys',
  '--master-keys': 'wrapping-keys',
}

/** The 1.x spellings of -w, still accepted (with a hint). */
export const DEPRECATED_KEY_FLAGS = ['-m', '--master-keys']

export function expandArgfiles(argv: readonly string[], depth = 0): string[] {
  const out: string[] = []
  for (const arg of argv) {
    if (!arg.startsWith('@') || arg.length === 1) {
      out.push(arg)
      continue
    }
    if (depth > 8) throw new UsageError(`${arg}: argument files nested too deeply`)
    const path = expandHome(arg.slice(1))
    let text: string
    try {
      text = readFileSync(path, 'utf8')
    } catch (err) {
      throw new UsageError(`${arg}: cannot read argument file ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
    }
    const tokens: string[] = []
    for (const line of text.split(/\r?\n/)) {
      let lineTokens: string[]
      try {
        lineTokens = shlexSplit(line)
      } catch {
        throw new UsageError(`${arg}: unbalanced quotes in ${path}: ${line.slice(0, 60)}`)
      }
      const comment = lineTokens.findIndex((token) => token.startsWith('#'))
      if (comment >= 0) lineTokens = lineTokens.slice(0, comment)
      tokens.push(...lineTokens.map((token) => expandHome(expandVariables(token))))
    }
    out.push(...expandArgfiles(tokens, depth + 1))
  }
  return out
}

function expandVariables(token: string): string {
  return token.replace(/\$(\w+)|\$\{(\w+)\}/g, (match, a: string | undefined, b: string | undefined) => process.env[(a ?? b)!] ?? match)
}

function expandHome(path: string): string {
  return path === '~' || path.startsWith('~/') ? homedir() + path.slice(1) : path
}

/** Rewrite `-w a b -w c` into `--wrapping-keys=a\x1fb --wrapping-keys=c` so groups survive yargs. */
export function groupRepeatedFlags(argv: readonly string[]): string[] {
  const out: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (arg === '--') {
      out.push(...argv.slice(i))
      break
    }
    // yargs takes a lone `-` for a positional; `-o -` means stdout, so glue it to its flag.
    if (arg.startsWith('-') && arg !== '-' && !arg.includes('=') && argv[i + 1] === '-' && !GROUPED_FLAGS[arg]) {
      out.push(`${arg}=-`)
      i++
      continue
    }
    const eq = arg.indexOf('=')
    const flag = arg.startsWith('--') && eq > 0 ? arg.slice(0, eq) : arg
    const name = GROUPED_FLAGS[flag]
    if (!name) {
      out.push(arg)
      continue
    }
    const values: string[] = flag !== arg ? [arg.slice(eq + 1)] : []
    while (i + 1 < argv.length && !argv[i + 1].startsWith('-')) values.push(argv[++i])
    // yargs reads `--flag=` as no value at all: a lone empty argument (-c '') is kept as a group of empty tokens, so it is refused, not ignored.
    out.push(`--${name}=${values.length === 1 && values[0] === '' ? GROUP_SEPARATOR : values.join(GROUP_SEPARATOR)}`)
  }
  return out
}

export function splitGroup(group: string): string[] {
  return group === '' ? [] : group.split(GROUP_SEPARATOR)
}

/** `-c k=v k2=v2` on encrypt; on decrypt a bare `k` only requires the key to exist. */
export function parseContextPairs(tokens: readonly string[], allowBareKeys: boolean): Record<string, string | null> {
  const context: Record<string, string | null> = {}
  for (const token of tokens) {
    // As aws-encryption-cli: "" is not key=value (an empty value, "team=", is allowed).
    if (token === '') throw new UsageError('-c/--encryption-context: an empty argument is not key=value')
    const eq = token.indexOf('=')
    if (eq === 0) throw new UsageError(`-c/--encryption-context: "${token}" has an empty key`)
    if (eq < 0) {
      if (!allowBareKeys) throw new UsageError(`-c/--encryption-context: "${token}" is not key=value (bare keys only apply to decrypt)`)
      context[token] = null
      continue
    }
    const key = token.slice(0, eq)
    if (!allowBareKeys && key.startsWith('aws-crypto-')) throw new UsageError(`-c/--encryption-context: keys starting with aws-crypto- are reserved ("${key}")`)
    context[key] = token.slice(eq + 1)
  }
  return context
}
