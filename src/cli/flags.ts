// Long flags as aws-encryption-cli (Python argparse) takes them: an unambiguous prefix stands for the whole
// flag (`--meta` for `--metadata-output`), and an unknown flag is answered with the closest known one.
import { distance } from 'fastest-levenshtein'
import { UsageError } from '../errors.js'

/** The long flag names (without dashes) of a yargs parser's options, aliases included. */
export function longFlagNames(parser: object): string[] {
  // getOptions() is yargs' public method, missing from its type declarations.
  const options = (parser as { getOptions(): { key: Record<string, unknown>; alias: Record<string, string[]> } }).getOptions()
  const names = new Set<string>()
  for (const key of Object.keys(options.key)) names.add(key)
  for (const aliases of Object.values(options.alias)) for (const alias of aliases) names.add(alias)
  return [...names].filter((name) => name.length > 1 && !/[A-Z]/.test(name))
}

/** Rewrites each `--prefix[=value]` that names exactly one known flag into that flag. Unknown and ambiguous
 *  flags are usage errors; `--no-X` negations and everything after `--` are left alone. */
export function expandAbbreviations(argv: readonly string[], known: readonly string[], notAbbreviated: readonly string[] = []): string[] {
  const knownSet = new Set(known)
  const targets = known.filter((name) => !notAbbreviated.includes(name))
  const out: string[] = []
  const unknown: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (arg === '--') {
      out.push(...argv.slice(i))
      break
    }
    if (!arg.startsWith('--') || arg.length === 2) {
      out.push(arg)
      continue
    }
    const eq = arg.indexOf('=')
    const name = arg.slice(2, eq < 0 ? undefined : eq)
    const rest = eq < 0 ? '' : arg.slice(eq)
    if (knownSet.has(name) || (name.startsWith('no-') && knownSet.has(name.slice(3)))) {
      out.push(arg)
      continue
    }
    const matches = targets.filter((target) => target.startsWith(name))
    if (matches.length === 1) out.push(`--${matches[0]}${rest}`)
    else if (matches.length > 1) throw new UsageError(`ambiguous option: --${name} could match ${matches.map((m) => `--${m}`).join(', ')}`)
    else unknown.push(name)
  }
  if (unknown.length) throw new UsageError(unknownFlagsMessage(unknown, known))
  return out
}

/** `Unknown argument: --sufix (did you mean --suffix?)`: each flag with its dashes and, when one is close
 *  enough to be a typo, the closest known flag. */
export function unknownFlagsMessage(names: readonly string[], known: readonly string[]): string {
  const described = names.map((name) => {
    const suggestion = closestFlag(name, known)
    return `${name.length === 1 ? '-' : '--'}${name}${suggestion ? ` (did you mean ${suggestion}?)` : ''}`
  })
  return `Unknown argument${names.length === 1 ? '' : 's'}: ${described.join(', ')}`
}

function closestFlag(name: string, known: readonly string[]): string | undefined {
  let best: string | undefined
  let bestDistance = Infinity
  for (const candidate of known) {
    if (candidate.length === 1) continue
    const d = distance(name, candidate)
    if (d < bestDistance) [best, bestDistance] = [candidate, d]
  }
  // Close enough to be a typo: at most a third of the typed name changed (and at least one edit allowed).
  return best !== undefined && bestDistance <= Math.max(1, Math.floor(name.length / 3)) ? `--${best}` : undefined
}
