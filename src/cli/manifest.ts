// `--manifest FILE|-|s3://...`: the work list of a tree command, read and made relative to its single input.
import { readFileSync } from 'node:fs'
import { UsageError } from '../errors.js'
import { parseManifest, relativeToInput, shardOf, type ManifestEntry, type Shard } from '../store/shard.js'
import type { Store } from '../store/plan.js'

export async function loadManifest(source: string, inputs: string[], stores: Store[], warn: (message: string) => void, shard: Shard | undefined): Promise<ManifestEntry[]> {
  const store = stores.find((s) => s.matches(source))
  const text = store?.readText ? await store.readText(source) : await readManifest(source)
  const { entries, outside } = relativeToInput(parseManifest(text, source), inputs[0])
  if (outside > 0) warn(`--manifest ${source}: ${outside} inventory row(s) outside ${inputs[0]} ignored`)
  // Every line was validated above; only this worker's share is kept, so that planning stats and holds
  // 1/N of the manifest (1,000,000 lines at --shard 0/16: 62,500 stats instead of 1,000,000).
  return shard ? entries.filter((entry) => shardOf(entry.path, shard.count) === shard.index) : entries
}

async function readManifest(source: string): Promise<string> {
  try {
    return source === '-' ? await readStdinText() : readFileSync(source, 'utf8')
  } catch (err) {
    throw new UsageError(`--manifest ${source}: cannot read it (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
  }
}

async function readStdinText(): Promise<string> {
  const chunks: Buffer[] = []
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks).toString('utf8')
}
