// File planning: turns `-i`/`-o`/`-r`/`--suffix` into a list of (input, output) pairs before anything is
// written, so that every refusal (collisions, output inside input, missing files) happens up front.
import { opendir, realpath, stat } from 'node:fs/promises'
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path'
import { EnvcryptError, UsageError } from '../errors.js'
import { shardOf, type ManifestEntry, type Shard } from './shard.js'
import { localFileInput, localFileOutput, stdinInput, stdoutOutput, TEMP_PREFIX, type InputItem, type OutputTarget } from './local.js'

export interface PlannedFile {
  input: InputItem
  output: OutputTarget
}

export interface PlanOptions {
  inputs: readonly string[]
  output: string
  recursive: boolean
  suffix: string
  /** Withhold stdout until authenticated (decrypt with --buffer). */
  bufferStdout?: boolean
  /** Follow symlinks that point outside the input root (default: skip them with a warning). */
  followSymlinks?: boolean
  warn: (message: string) => void
  /** Keep only the inputs whose relative path hashes to this shard (`--shard I/N`). */
  shard?: Shard
  /** Take the work list from a manifest instead of listing the (single) input root. */
  manifest?: ManifestEntry[]
  /** The metadata file, refused inside an output directory (a later `-d -r` of it would take it as input). */
  metadataOutput?: string
  /** No output tree: each input's target comes from here (verify's checks, store/verify.ts); `output` is unused. */
  outputFor?: (input: InputItem) => OutputTarget
}

/** Remote stores plug in here (S3); the planner only needs a listing and a way to name outputs. */
export interface Store {
  matches(uri: string): boolean
  /** List inputs under `uri` (a prefix when it ends with `/`, else a single object). */
  listInputs(uri: string, recursive: boolean): Promise<{ items: InputItem[]; isTree: boolean }>
  output(uri: string): OutputTarget
  isTreeUri(uri: string): boolean
  join(base: string, relPath: string): string
  /** An input for `relPath` under the prefix `base`, without listing (manifests). */
  inputAt?(base: string, relPath: string, size?: number): InputItem
  /** The text of a small object (a manifest stored in S3). */
  readText?(uri: string): Promise<string>
}

const GLOB_CHARS = /[*?[\]{}!]/

interface Listed {
  items: InputItem[]
  /** A directory, prefix or glob: outputs go under an output directory, mirrored. */
  isTree: boolean
  /** The local directory that was walked, to refuse outputs inside it. */
  localRoot?: string
  /** The remote prefix that was listed (ending in `/`), to refuse outputs inside it. */
  remoteRoot?: string
}

export async function planFiles(options: PlanOptions, stores: readonly Store[] = []): Promise<PlannedFile[]> {
  if (options.inputs.length === 0) throw new UsageError('-i/--input is required')
  // Real paths of directories, once per directory: 10,000 files in one folder share theirs.
  const realDirectories = new Map<string, Promise<string>>()
  const sameEntry = (a: string, b: string) => isSameEntry(a, b, realDirectories)
  const listings: Listed[] = []
  if (options.manifest) listings.push(await manifestInputs(options.inputs, options.manifest, stores))
  else for (const input of options.inputs) listings.push(...(await listInput(input, options, stores)))
  let items = listings.flatMap((l) => l.items)
  if (options.shard) {
    const { index, count } = options.shard
    items = items.filter((item) => shardOf(item.relPath, count) === index)
  }
  if (items.length === 0) return []
  if (options.outputFor) return items.map((input) => ({ input, output: options.outputFor!(input) }))

  const output = options.output
  const outputStore = stores.find((s) => s.matches(output))
  if (output === '-') {
    if (items.length !== 1 || listings.some((l) => l.isTree)) throw new UsageError('-o -: standard output takes exactly one input file')
    return [{ input: items[0], output: stdoutOutput({ buffer: options.bufferStdout ?? false }) }]
  }
  const treeOutput = outputStore
    ? outputStore.isTreeUri(output) || listings.some((l) => l.isTree) || items.length > 1
    : output.endsWith('/') || output.endsWith(sep) || (await isDirectory(output)) || listings.some((l) => l.isTree) || items.length > 1
  // stdin has no name to put in a directory (aws-encryption-cli refuses it too).
  if (treeOutput && options.inputs.includes('-')) throw new UsageError(`-o ${output}: standard input (-i -) needs an output file, not a directory`)
  if (!treeOutput) {
    if (items.length !== 1) throw new UsageError(`-o ${output}: several inputs need an output directory`)
    const target = outputStore ? outputStore.output(output) : localFileOutput(resolve(output))
    if (outputStore ? target.display === items[0].display : await sameEntry(target.display, items[0].display)) throw new UsageError(`-o ${output}: the output is the input itself`)
    return [{ input: items[0], output: target }]
  }

  if (outputStore && outputStore.isTreeUri(output) === false && !output.endsWith('/')) {
    // An S3 key without a trailing slash names one object; a tree needs a prefix.
    throw new UsageError(`-o ${output}: several inputs need a prefix ending in /`)
  }
  const outputRoot = outputStore ? output : resolve(output)
  if (outputStore) {
    // Outputs inside the listed prefix would be listed as inputs by the next run (and encrypted again).
    const outputPrefix = output.endsWith('/') ? output : output + '/'
    const enclosing = listings.find((listing) => listing.remoteRoot && outputPrefix.startsWith(listing.remoteRoot))
    if (enclosing) throw new UsageError(`-o ${output}: the output prefix is inside the input prefix ${enclosing.remoteRoot}; choose an output outside it`)
  } else {
    // Compare real paths: an output reached through a symlink into the input tree is still inside it.
    const realOutputRoot = await realpathOfExisting(outputRoot)
    const metadata = options.metadataOutput && options.metadataOutput !== '-' ? resolve(options.metadataOutput) : undefined
    if (metadata && (isInside(metadata, outputRoot) || isInside(await realpathOfExisting(metadata), realOutputRoot))) {
      throw new UsageError(`--metadata-output ${options.metadataOutput}: the metadata file is inside the output directory ${outputRoot}; put it outside`)
    }
    for (const listing of listings) {
      if (listing.localRoot && (isInside(outputRoot, listing.localRoot) || isInside(realOutputRoot, await realpathOfExisting(listing.localRoot)))) {
        throw new UsageError(`-o ${output}: the output directory is inside the input directory ${listing.localRoot}; choose an output outside it`)
      }
    }
  }
  const planned: PlannedFile[] = []
  const seen = new Map<string, string>()
  for (const item of items) {
    const rel = item.relPath + options.suffix
    const target = outputStore ? outputStore.output(outputStore.join(outputRoot, rel)) : localFileOutput(join(outputRoot, ...rel.split('/')))
    const previous = seen.get(target.display)
    if (previous !== undefined) {
      throw new UsageError(`inputs ${previous} and ${item.display} would both be written to ${target.display}`)
    }
    seen.set(target.display, item.display)
    if (outputStore ? target.display === item.display : await sameEntry(target.display, item.display)) throw new UsageError(`-o ${output}: ${item.display} would be overwritten by its own output`)
    planned.push({ input: item, output: target })
  }
  return planned
}

async function listInput(input: string, options: PlanOptions, stores: readonly Store[]): Promise<Listed[]> {
  if (input === '-') return [{ items: [stdinInput()], isTree: false }]
  const store = stores.find((s) => s.matches(input))
  if (store) {
    const listed = await store.listInputs(input, options.recursive)
    return [listed.isTree ? { ...listed, remoteRoot: input.endsWith('/') ? input : input + '/' } : listed]
  }
  const path = resolve(input)
  const info = await stat(path).catch(() => undefined)
  if (info?.isFile()) return [{ items: [localFileInput(path, basename(path), info)], isTree: false }]
  if (info?.isDirectory()) return [await listDirectory(path, '', options)]
  // A missing input is a failed run (exit 1), not a usage error, as in aws-encryption-cli.
  if (info) throw new EnvcryptError(`-i ${input}: not a regular file or directory`)
  if (!GLOB_CHARS.test(input)) throw new EnvcryptError(`-i ${input}: no such file or directory`)
  return listGlob(input, options)
}

/** A directory input: walked with -r (paths under `prefix`), else skipped with a warning, as aws-encryption-cli. */
async function listDirectory(path: string, prefix: string, options: PlanOptions): Promise<Listed> {
  if (!options.recursive) {
    options.warn(`skipping directory ${path}: use -r to process directories`)
    return { items: [], isTree: true }
  }
  const items = await walkDirectory(path, options)
  if (prefix) for (const item of items) item.relPath = `${prefix}/${item.relPath}`
  return { items, isTree: true, localRoot: path }
}

/** A glob: matching files, and with -r matching directories walked (as aws-encryption-cli), all mirrored under
 *  the pattern's fixed base directory. */
async function listGlob(pattern: string, options: PlanOptions): Promise<Listed[]> {
  const base = resolve(globBase(pattern))
  const fg = await fastGlob()
  const matches = await fg(pattern, { onlyFiles: false, dot: true, absolute: true, followSymbolicLinks: false, unique: true })
  const files: InputItem[] = []
  const listings: Listed[] = [{ items: files, isTree: true }]
  const walked: string[] = []
  // Sorted, a directory comes before everything under it: `data/**` lists each file once.
  for (const match of matches.sort()) {
    if (basename(match).startsWith(TEMP_PREFIX) || walked.some((dir) => isInside(match, dir))) continue
    const info = await stat(match).catch(() => undefined)
    const rel = relative(base, match).split(sep).join('/')
    if (info?.isFile()) files.push(localFileInput(match, rel, info))
    else if (info?.isDirectory()) {
      listings.push(await listDirectory(match, rel, options))
      if (options.recursive) walked.push(match)
    }
  }
  if (listings.length === 1 && files.length === 0) throw new EnvcryptError(`-i ${pattern}: the pattern matches no file${options.recursive ? ' or directory' : ''}`)
  return listings
}

async function manifestInputs(inputs: readonly string[], manifest: ManifestEntry[], stores: readonly Store[]): Promise<Listed> {
  if (inputs.length !== 1 || inputs[0] === '-') throw new UsageError('--manifest: give exactly one -i: the directory or s3:// prefix the manifest paths are relative to')
  const base = inputs[0]
  const store = stores.find((s) => s.matches(base))
  if (store) {
    if (!store.inputAt) throw new UsageError(`--manifest: ${base} cannot be read from a manifest`)
    return { items: manifest.map((entry) => store.inputAt!(base, entry.path, entry.size)), isTree: true }
  }
  const root = resolve(base)
  if (!(await isDirectory(root))) throw new UsageError(`--manifest: -i ${base} must be a directory`)
  const items: InputItem[] = []
  for (const entry of manifest) {
    const path = join(root, ...entry.path.split('/'))
    const info = await stat(path).catch(() => undefined)
    // A listed file that is missing fails on its own (named in the summary), the others go on.
    items.push(info?.isFile() ? localFileInput(path, entry.path, info) : missingInput(path, entry.path, entry.line))
  }
  return { items, isTree: true, localRoot: root }
}

function missingInput(path: string, relPath: string, line: number): InputItem {
  return {
    display: path,
    relPath,
    open: async () => {
      throw new EnvcryptError(`listed in the manifest (line ${line}) but not a regular file`)
    },
  }
}

/** fast-glob (25 modules) loads only for a directory or a glob: a run over named files does without it. */
async function fastGlob() {
  return (await import('fast-glob')).default
}

async function walkDirectory(root: string, options: PlanOptions): Promise<InputItem[]> {
  const realRoot = await realpath(root)
  // stats: fast-glob lstats the entries itself, concurrently (one awaited lstat per file took ~2 s for 10,000).
  const fg = await fastGlob()
  const entries = await fg('**/*', {
    cwd: root,
    dot: true,
    onlyFiles: false,
    followSymbolicLinks: false,
    stats: true,
    // A directory that cannot be listed (unreadable, too long a path, gone meanwhile) must not abort the
    // listing: each such directory is found below and fails on its own.
    suppressErrors: true,
    // fast-glob is told to treat the name literally (no escaping needed for names with glob characters).
  })
  entries.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
  const items: InputItem[] = []
  for (const { path: rel, name, stats: linkInfo } of entries) {
    if (name.startsWith(TEMP_PREFIX) || !linkInfo) continue
    const full = join(root, ...rel.split('/'))
    if (linkInfo.isSymbolicLink()) {
      const target = await realpath(full).catch(() => undefined)
      if (!target) {
        options.warn(`skipping broken symlink ${full}`)
        continue
      }
      if (!options.followSymlinks && !isInside(target, realRoot)) {
        options.warn(`skipping symlink ${full}: it points outside ${root} (use --follow-symlinks to include it)`)
        continue
      }
      const targetInfo = await stat(target)
      if (!targetInfo.isFile()) {
        if (!targetInfo.isDirectory()) options.warn(`skipping ${specialKind(targetInfo)} ${full} (a symlink to one)`)
        continue
      }
      items.push(localFileInput(full, rel, targetInfo))
    } else if (linkInfo.isFile()) {
      items.push(localFileInput(full, rel, linkInfo))
    } else if (linkInfo.isDirectory()) {
      const problem = await unlistable(full)
      if (problem) items.push(failedInput(full, rel, `cannot list this directory (${problem}); the files in it were not processed`))
    } else {
      // Never opened: opening a FIFO blocks until a writer comes.
      const kind = specialKind(linkInfo)
      options.warn(`skipping ${kind} ${full}`)
      items.push({ display: full, relPath: rel, skip: kind, open: async () => { throw new EnvcryptError(`${kind}: not a regular file`) } })
    }
  }
  return items
}

/** Linux's PATH_MAX: a longer path cannot be opened or listed (fast-glob then drops it without a word). */
const PATH_MAX = 4096
const NAME_MAX = 255

/** Why `dir` (or what is in it) cannot be listed, or undefined when it can. */
async function unlistable(dir: string): Promise<string | undefined> {
  try {
    const handle = await opendir(dir)
    try {
      // Only a directory near PATH_MAX is read twice: are some of its entries' paths too long to reach?
      const length = Buffer.byteLength(dir)
      if (length + 1 + NAME_MAX >= PATH_MAX) {
        for await (const entry of handle) if (length + 1 + Buffer.byteLength(entry.name) >= PATH_MAX) return `paths in it are longer than PATH_MAX (${PATH_MAX})`
      }
    } finally {
      await handle.close().catch(() => undefined)
    }
    return undefined
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    return code === 'EACCES' || code === 'EPERM' ? 'permission denied' : code === 'ENOENT' ? 'it disappeared during the listing' : code === 'ENAMETOOLONG' ? 'its path is too long' : code ?? 'error'
  }
}

function specialKind(info: { isFIFO(): boolean; isSocket(): boolean; isCharacterDevice(): boolean; isBlockDevice(): boolean }): string {
  return info.isFIFO() ? 'FIFO' : info.isSocket() ? 'socket' : info.isCharacterDevice() ? 'character device' : info.isBlockDevice() ? 'block device' : 'special file'
}

/** A planned input that fails on its own when processed (the rest of the tree goes on). */
function failedInput(path: string, relPath: string, message: string): InputItem {
  return { display: path, relPath, failure: message, open: async () => { throw new EnvcryptError(message) } }
}

function globBase(pattern: string): string {
  const parts = pattern.split('/')
  const fixed: string[] = []
  for (const part of parts) {
    if (GLOB_CHARS.test(part)) break
    fixed.push(part)
  }
  const base = fixed.join('/')
  return base === '' ? (isAbsolute(pattern) ? '/' : '.') : base
}

function isInside(child: string, parent: string): boolean {
  const rel = relative(parent, child)
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel))
}

async function isDirectory(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isDirectory() ?? false
}

/** The real path of `path`, resolving symlinks in its longest existing prefix (the rest may not exist yet). */
async function realpathOfExisting(path: string): Promise<string> {
  const real = await realpath(path).catch(() => undefined)
  if (real !== undefined) return real
  const parent = dirname(path)
  return parent === path ? path : join(await realpathOfExisting(parent), basename(path))
}

/** Whether two local paths name the same directory entry (symlinked directories resolved, not the final name:
 *  renaming over a symlink replaces the link, never its target). `realDirectories` caches directories' real paths. */
async function isSameEntry(a: string, b: string, realDirectories: Map<string, Promise<string>>): Promise<boolean> {
  if (a === b) return true
  const entry = async (path: string) => {
    const dir = dirname(path)
    let real = realDirectories.get(dir)
    if (!real) realDirectories.set(dir, (real = realpathOfExisting(dir)))
    return join(await real, basename(path))
  }
  return (await entry(a)) === (await entry(b))
}
