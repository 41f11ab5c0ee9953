// One file of a tree run: skip checks, then the engine (by file on a worker, or as streams), then the commit,
// the summary counts and the metadata line. Every error of a file ends here as that file's failure.
import type { CommitmentPolicy, MessageHeader, NodeMaterialsManager } from '@aws-crypto/client-node'
import type { DecryptMessageOptions, EncryptMessageOptions, Engine, MessageResult, ParsedHeader, ByteSource } from '../message/engine.js'
import { describeError, EnvcryptError, IntegrityError, InterruptedError, untilAborted } from '../errors.js'
import { lazyWriter, type FileTarget, type OutputWriter, type TemporaryTarget } from '../store/local.js'
import { metadataRecord, type MetadataSink, type Mode } from '../message/metadata.js'
import type { PlannedFile } from '../store/plan.js'
import type { FileEngine } from '../message/pool.js'
import type { DecryptTreeOptions, EncryptTreeOptions, FileEvent, MessageStage, TransformedSource, TreeSummary } from './options.js'
import { base64Decode, base64EncodeInto } from './base64.js'
import { explainUnwrapFailure, isBareUnwrapFailure } from '../keys/mismatch.js'
import type { WrappingKeySpec } from '../keys/keyrings.js'

/** What every file of one run shares: set up once by runTree. */
export interface TreeRun {
  mode: Mode
  options: EncryptTreeOptions & DecryptTreeOptions
  engine: Engine
  cmm: NodeMaterialsManager
  commitmentPolicy: CommitmentPolicy
  suiteId: EncryptMessageOptions['suiteId']
  frameLength: number
  stage?: MessageStage
  /** True when some file must go through streams (encode/decode, a stage, a transform, or a stream-only engine). */
  streamsOnly: boolean
  summary: TreeSummary
  metadata: MetadataSink
  /** Outputs being written, aborted when the run is interrupted. */
  inFlight: Set<Pick<OutputWriter, 'abort'>>
  /** Inputs being read, closed when the run is interrupted. */
  openSources: Set<ByteSource>
  warn: (message: string) => void
  /** Set by the first error that will fail every file: files not started yet are then not attempted. */
  stop: RunStop
  /** The -w keys, to explain a data key none of them could unwrap. */
  keySpecs: readonly WrappingKeySpec[]
}

export interface RunStop {
  error?: EnvcryptError
}

type CommittableOutput = { commit(options: { noClobber: boolean }): Promise<void>; abort(): Promise<void> }

/** State of one file while it is processed, for the failure path. */
interface FileProgress {
  header?: MessageHeader
  parsed?: ParsedHeader
  /** A stream writer, or a temporary the engine commits itself (commit() then only records that it did). */
  writer?: CommittableOutput
  opened?: ByteSource
}

export async function processFile(run: TreeRun, file: PlannedFile): Promise<void> {
  const { options, summary } = run
  if (options.signal?.aborted) return
  if (run.stop.error) {
    summary.files_not_attempted = (summary.files_not_attempted ?? 0) + 1
    return
  }
  const event: FileEvent = { input: file.input.display, output: file.output.display, status: 'ok', bytesIn: 0, bytesOut: 0 }
  const progress: FileProgress = {}
  try {
    if (file.input.skip || (await shouldSkip(run, file))) {
      event.status = 'skipped'
      summary.files_skipped++
      options.onFile?.(event)
      return
    }
    const result = await runEngine(run, file, progress)
    recordSuccess(run, file, result, event)
  } catch (err) {
    await recordFailure(run, file, progress, err, event)
  } finally {
    if (progress.opened) run.openSources.delete(progress.opened)
  }
  options.onFile?.(event)
}

/** --sync, --skip-existing, --no-overwrite and --interactive: whether this file is left alone. */
async function shouldSkip(run: TreeRun, file: PlannedFile): Promise<boolean> {
  const { options } = run
  if (options.sync && (await file.output.isUpToDate?.(file.input))) return true
  if ((options.skipExisting || options.noOverwrite || options.confirmOverwrite) && (await file.output.exists())) {
    // As aws-encryption-cli: an existing output under --no-overwrite is a warning and a skip, not a failure.
    if (options.noOverwrite && !options.skipExisting) {
      run.warn(`${file.output.display} exists; skipped (--no-overwrite)`)
      return true
    }
    if (options.skipExisting || !(await options.confirmOverwrite!(file.output.display))) return true
  }
  return false
}

function encryptOptionsFor(run: TreeRun, file: PlannedFile): EncryptMessageOptions {
  const { options } = run
  return {
    cmm: run.cmm,
    commitmentPolicy: run.commitmentPolicy,
    suiteId: run.suiteId,
    frameLength: run.frameLength,
    encryptionContext: options.encryptionContext ?? {},
    plaintextLength: file.input.size,
    maxEncryptedDataKeys: options.maxEncryptedDataKeys ?? false,
  }
}

function decryptOptionsFor(run: TreeRun, progress: FileProgress): DecryptMessageOptions {
  const { options } = run
  return {
    cmm: run.cmm,
    commitmentPolicy: run.commitmentPolicy,
    signaturePolicy: run.mode === 'decrypt-unsigned' || (run.mode === 'verify' && options.unsignedOnly) ? 'forbid-signed' : 'allow',
    maxEncryptedDataKeys: options.maxEncryptedDataKeys ?? false,
    maxBodySize: options.maxLength,
    outputKeepsNothing: run.mode === 'verify',
    onHeader: (p) => {
      progress.parsed = p
      checkRequiredContext(p.header.encryptionContext, options.requiredContext)
    },
  }
}

/** Runs the engine on one file and commits its output; returns what the engine reported. */
async function runEngine(run: TreeRun, file: PlannedFile, progress: FileProgress): Promise<MessageResult> {
  const { options } = run
  const outputMode = file.input.mode ?? (run.mode === 'encrypt' ? 0o644 & ~process.umask() : 0o600)
  const byFile = !run.streamsOnly && file.input.localPath !== undefined && file.output.openTemporary !== undefined
  const transformed: { value?: TransformedSource } = {}
  const result = byFile ? await runByFile(run, file, progress, outputMode) : await runByStream(run, file, progress, outputMode, transformed)
  if (!progress.writer) throw new EnvcryptError('internal: the engine wrote no output')
  progress.header = result.header
  await progress.writer.commit({ noClobber: options.noOverwrite ?? false })
  run.inFlight.delete(progress.writer)
  await transformed.value?.afterCommit?.({
    decryptInto: async (sink) => {
      if (!file.output.read) throw new EnvcryptError(`cannot read ${file.output.display} back to verify it`)
      return run.engine.decrypt(await file.output.read(), sink, { cmm: run.cmm, commitmentPolicy: run.commitmentPolicy, maxEncryptedDataKeys: options.maxEncryptedDataKeys ?? false })
    },
  })
  return result
}

/** Local file to local file: the engine's worker reads the input and creates, writes and commits the output. */
async function runByFile(run: TreeRun, file: PlannedFile, progress: FileProgress, outputMode: number): Promise<MessageResult> {
  const { options } = run
  const openTemporary = file.output.openTemporary!
  const openOutput = async () => {
    if (options.signal?.aborted) throw new InterruptedError('SIGTERM')
    const temporary = await openTemporary({ mode: outputMode, fsync: options.fsync ?? false, noClobber: options.noOverwrite ?? false })
    progress.writer = temporary
    run.inFlight.add(temporary)
    return temporary.target
  }
  const engine = run.engine as FileEngine
  const fileOptions = { signal: options.signal, inputSize: file.input.size, planned: { size: file.input.size, mtimeMs: file.input.mtimeMs, ino: file.input.ino } }
  // Not untilAborted: the engine stops waiting on KMS itself, and a file its worker already committed
  // when the run is interrupted still counts (and gets its metadata line); workers stop at their next check.
  return run.mode === 'encrypt'
    ? engine.encryptFile(file.input.localPath!, () => openOutput().then(fileToWrite), { ...encryptOptionsFor(run, file), ...fileOptions })
    : engine.decryptFile(file.input.localPath!, openOutput, { ...decryptOptionsFor(run, progress), ...fileOptions })
}

/** Encrypt always writes a file (only verify's outputs are checks). */
function fileToWrite(target: FileTarget): TemporaryTarget {
  if ('check' in target) throw new EnvcryptError('internal: encrypt needs an output file')
  return target
}

/** Any other pair (stdin/stdout, S3, --encode/--decode, reencrypt, migrate): the engine between two streams. */
async function runByStream(run: TreeRun, file: PlannedFile, progress: FileProgress, outputMode: number, transformed: { value?: TransformedSource }): Promise<MessageResult> {
  const { options, mode } = run
  const opened = await file.input.open()
  progress.opened = opened
  run.openSources.add(opened)
  let source = opened
  if (mode !== 'encrypt' && options.decode) source = base64Decode(source)
  transformed.value = mode === 'encrypt' && options.transformSource ? await options.transformSource(file.input, source) : undefined
  if (transformed.value) source = transformed.value.source
  const streamWriter = lazyWriter(() => file.output.open({ mode: outputMode, fsync: options.fsync ?? false, noClobber: options.noOverwrite ?? false, source: { size: file.input.size, mtimeMs: file.input.mtimeMs } }))
  progress.writer = streamWriter
  run.inFlight.add(streamWriter)
  if (options.signal?.aborted) throw new InterruptedError('SIGTERM')
  const { stream: sinkStream, done: sinkDone } = mode === 'encrypt' && options.encode ? base64EncodeInto(streamWriter.stream) : { stream: streamWriter.stream, done: Promise.resolve() }
  const encryptOptions = encryptOptionsFor(run, file)
  const streamEncryptOptions = transformed.value ? { ...encryptOptions, plaintextLength: transformed.value.plaintextLength } : encryptOptions
  const result = await untilAborted(options.signal, run.stage
    ? run.stage.run(source, sinkStream, streamEncryptOptions)
    : mode === 'encrypt'
    ? run.engine.encrypt(source, sinkStream, streamEncryptOptions)
    : run.engine.decrypt(source, sinkStream, decryptOptionsFor(run, progress)))
  await sinkDone
  return result
}

function recordSuccess(run: TreeRun, file: PlannedFile, result: MessageResult, event: FileEvent): void {
  const { summary } = run
  event.bytesIn = result.bytesIn
  event.bytesOut = result.bytesOut
  summary.files_ok++
  summary.bytes_in += result.bytesIn
  summary.bytes_out += result.bytesOut
  run.metadata.write(metadataRecord({ header: result.header, headerAuth: result.headerAuth, input: file.input.display, output: file.output.display, mode: run.mode }))
}

async function recordFailure(run: TreeRun, file: PlannedFile, progress: FileProgress, err: unknown, event: FileEvent): Promise<void> {
  const { options, summary } = run
  if (progress.writer) {
    run.inFlight.delete(progress.writer)
    await progress.writer.abort()
  }
  const interrupted = options.signal?.aborted
  const knownHeader = progress.header ?? progress.parsed?.header
  let message = interrupted ? 'interrupted' : describeError(err)
  // Keyrings may wrap the run-wide error in their own message: it is reported once, by its own words.
  if (run.stop.error && message.includes(run.stop.error.message)) {
    message = run.stop.error.message
    event.runWide = true
  } else if (!interrupted && !run.stage && run.mode !== 'encrypt' && knownHeader && isBareUnwrapFailure(message)) {
    message = explainUnwrapFailure(knownHeader, run.keySpecs)
  }
  event.status = 'failed'
  event.error = message
  if (interrupted) return
  summary.files_failed++
  summary.failures.push({ input: file.input.display, error: message })
  // verify reports every file, a message it could not even parse too.
  if (knownHeader || run.mode === 'verify') {
    run.metadata.write(metadataRecord({ header: knownHeader, headerAuth: progress.parsed?.headerAuth, input: file.input.display, output: file.output.display, mode: run.mode, error: message }))
  }
}

export function checkRequiredContext(context: Readonly<Record<string, string>>, required?: Record<string, string | null>): void {
  if (!required) return
  for (const [key, value] of Object.entries(required)) {
    if (!(key in context)) throw new IntegrityError(`encryption context mismatch: key "${key}" is not in the message`)
    if (value !== null && context[key] !== value) {
      throw new IntegrityError(`encryption context mismatch: "${key}" is "${context[key]}", expected "${value}"`)
    }
  }
}
