// Work splitting for many independent workers under a batch scheduler (Kubernetes Indexed Jobs, AWS Batch
// array jobs, CI matrices): a stable hash assigns each relative path to one shard, and a manifest can
// replace listing.
//
// The hash: the first 8 bytes of SHA-256 over the UTF-8 relative path (`/`-separated, as mirrored under the
// output), read as a big-endian unsigned 64-bit integer, modulo N. Each file's shard depends on its own path
// only, so adding files never moves another file, and the N shards are disjoint and cover everything.
import { createHash } from 'node:crypto'
import { UsageError } from '../errors.js'

export interface Shard {
  index: number
  count: number
}

/** Environment variables schedulers set to a worker's index, tried in order by `--shard env`. */
const SHARD_INDEX_VARIABLES = ['JOB_COMPLETION_INDEX', 'AWS_BATCH_JOB_ARRAY_INDEX', 'ENVCRYPT_SHARD_INDEX'] as const

export function shardOf(relPath: string, count: number): number {
  const digest = createHash('sha256').update(relPath, 'utf8').digest()
  return Number(digest.readBigUInt64BE(0) % BigInt(count))
}

/**
 * `--shard I/N`, or `--shard env` (index from JOB_COMPLETION_INDEX / AWS_BATCH_JOB_ARRAY_INDEX / ENVCRYPT_SHARD_INDEX,
 * count from --shard-count or ENVCRYPT_SHARD_COUNT), or `--shard-index-env NAME --shard-count N`.
 */
export function parseShard(
  options: { shard?: string; shardIndexEnv?: string; shardCount?: number },
  env: NodeJS.ProcessEnv = process.env,
): Shard | undefined {
  const { shard, shardIndexEnv, shardCount } = options
  if (shard === undefined && shardIndexEnv === undefined) {
    if (shardCount !== undefined) throw new UsageError('--shard-count needs --shard env or --shard-index-env NAME')
    return undefined
  }
  if (shard !== undefined && shardIndexEnv !== undefined) throw new UsageError('give --shard or --shard-index-env, not both')
  let indexText: string | undefined
  let countValue: number | undefined = shardCount
  let source: string
  if (shard !== undefined && shard !== 'env') {
    const match = /^(\d+)\/(\d+)$/.exec(shard)
    if (!match) throw new UsageError(`--shard: "${shard}" is not I/N (for example 0/4) or env`)
    if (shardCount !== undefined) throw new UsageError('--shard I/N already gives the count; drop --shard-count')
    indexText = match[1]
    countValue = Number(match[2])
    source = '--shard'
  } else {
    const names = shardIndexEnv !== undefined ? [shardIndexEnv] : [...SHARD_INDEX_VARIABLES]
    const name = names.find((n) => env[n] !== undefined && env[n] !== '')
    if (!name) throw new UsageError(`--shard: none of ${names.join(', ')} is set in the environment`)
    indexText = env[name]
    source = `$${name}`
    if (countValue === undefined && env.ENVCRYPT_SHARD_COUNT) countValue = Number(env.ENVCRYPT_SHARD_COUNT)
    if (countValue === undefined) throw new UsageError('--shard env needs --shard-count N (or ENVCRYPT_SHARD_COUNT)')
  }
  if (!Number.isInteger(countValue) || countValue! < 1) throw new UsageError(`--shard: the shard count must be a positive integer`)
  if (!/^\d+$/.test(indexText ?? '')) throw new UsageError(`--shard: ${source} = "${indexText}" is not a shard index`)
  const index = Number(indexText)
  if (index >= countValue!) throw new UsageError(`--shard: index ${index} (from ${source}) must be below the count ${countValue}`)
  return { index, count: countValue! }
}

export interface ManifestEntry {
  /** Relative path or key, as it would be mirrored under the output. */
  path: string
  line: number
  /** Present for S3 Inventory rows: the bucket the row names. */
  bucket?: string
  size?: number
}

/**
 * A manifest: one relative path or key per line (blank lines and `#` comments ignored), or an S3 Inventory CSV
 * (`"bucket","key"[,"size",...]`, keys URL-encoded as Inventory writes them). Every malformed line is reported
 * with its number, all at once.
 */
export function parseManifest(text: string, source: string): ManifestEntry[] {
  const entries: ManifestEntry[] = []
  const problems: string[] = []
  const lines = text.split(/\r?\n/)
  const isInventory = lines.some((line) => line.startsWith('"'))
  lines.forEach((raw, i) => {
    const line = i + 1
    if (raw.trim() === '' || (!isInventory && raw.startsWith('#'))) return
    let path: string
    let bucket: string | undefined
    let size: number | undefined
    if (isInventory) {
      const fields = parseCsvLine(raw)
      if (!fields || fields.length < 2 || fields[0] === '' || fields[1] === '') {
        problems.push(`line ${line}: expected "bucket","key"[,...]`)
        return
      }
      bucket = fields[0]
      try {
        path = decodeURIComponent(fields[1].replace(/\+/g, ' '))
      } catch {
        problems.push(`line ${line}: key is not URL-encoded as S3 Inventory writes it`)
        return
      }
      if (fields[2] !== undefined && fields[2] !== '') {
        size = Number(fields[2])
        if (!Number.isInteger(size) || size < 0) {
          problems.push(`line ${line}: size "${fields[2]}" is not a byte count`)
          return
        }
      }
    } else {
      path = raw
    }
    const problem = unsafePath(path)
    if (problem) {
      problems.push(`line ${line}: ${problem}`)
      return
    }
    entries.push({ path, line, bucket, size })
  })
  if (problems.length > 0) {
    const shown = problems.slice(0, 5).join('; ')
    throw new UsageError(`--manifest ${source}: ${problems.length} malformed line${problems.length === 1 ? '' : 's'}: ${shown}${problems.length > 5 ? '; ...' : ''}`)
  }
  return entries
}

/** Why a manifest path could escape the input root or the output tree, or undefined when it is safe. */
function unsafePath(path: string): string | undefined {
  if (path.startsWith('/')) return `"${path}" is absolute; list paths relative to the input`
  if (path.includes('\\')) return `"${path}" contains a backslash`
  if (path.split('/').some((part) => part === '..' || part === '.')) return `"${path}" contains a . or .. segment`
  if (path.includes('\0')) return 'path contains a NUL byte'
  return undefined
}

function parseCsvLine(line: string): string[] | undefined {
  const fields: string[] = []
  let i = 0
  while (i <= line.length) {
    if (line[i] === '"') {
      let value = ''
      i++
      for (;;) {
        if (i >= line.length) return undefined
        if (line[i] === '"') {
          if (line[i + 1] === '"') {
            value += '"'
            i += 2
            continue
          }
          i++
          break
        }
        value += line[i++]
      }
      fields.push(value)
      if (i < line.length && line[i] !== ',') return undefined
      i++
    } else {
      const end = line.indexOf(',', i)
      fields.push(end < 0 ? line.slice(i) : line.slice(i, end))
      i = end < 0 ? line.length + 1 : end + 1
    }
  }
  return fields
}

/**
 * S3 Inventory rows name full keys in a bucket; the work list is relative to the `-i` prefix. Keep the rows of
 * that bucket under that prefix, made relative; report how many were outside it. Plain lines are unchanged.
 */
export function relativeToInput(entries: ManifestEntry[], input: string): { entries: ManifestEntry[]; outside: number } {
  const match = /^s3:\/\/([^/]+)\/?(.*)$/.exec(input)
  const kept: ManifestEntry[] = []
  let outside = 0
  for (const entry of entries) {
    if (entry.bucket === undefined) {
      kept.push(entry)
      continue
    }
    if (!match) throw new UsageError(`--manifest: an S3 Inventory report needs an s3:// input, not ${input}`)
    const [, bucket, prefix] = match
    const dirPrefix = prefix === '' || prefix.endsWith('/') ? prefix : `${prefix}/`
    if (entry.bucket !== bucket || !entry.path.startsWith(dirPrefix) || entry.path.length === dirPrefix.length) {
      outside++
      continue
    }
    kept.push({ ...entry, path: entry.path.slice(dirPrefix.length) })
  }
  return { entries: kept, outside }
}
