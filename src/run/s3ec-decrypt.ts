// `envcrypt -d --from s3ec`: objects of the Amazon S3 Encryption Client straight to plaintext files. Each
// object's plaintext goes only to its output's temporary, renamed once the GCM tag verified (store/s3ec.ts
// ends its stream only then); the same planning, metadata file and summary as decryptTree.
import { pipeline } from 'node:stream/promises'
import { Readable } from 'node:stream'
import pLimit from 'p-limit'
import { describeError, UsageError } from '../errors.js'
import { createKmsClient, type KmsCallCounts } from '../keys/keyrings.js'
import { planFiles, type PlannedFile } from '../store/plan.js'
import { decodeS3ecObject, INSTRUCTION_SUFFIX, s3ecKeysFromSpecs, type S3ecEnvelope, type S3ecKeys } from '../store/s3ec.js'
import type { OutputWriter } from '../store/local.js'
import type { DecryptTreeOptions, FileEvent, TreeSummary } from './options.js'
import { openMetadataSink, type MetadataRecord } from '../message/metadata.js'

export interface S3ecDecryptOptions extends DecryptTreeOptions {
  /** Read AES-CBC (v1) objects, which carry no authentication. */
  allowLegacyS3ecV1?: boolean
}

const DEFAULT_JOBS = 8

/** The metadata line of an S3EC object: no Encryption SDK header, the envelope's algorithms instead. */
interface S3ecRecord {
  input: string
  output: string
  mode: 'decrypt'
  s3ec?: { cek_alg: string; wrap_alg: string; envelope: string; matdesc: Record<string, string> }
  error?: string
}

const describeEnvelope = (envelope: S3ecEnvelope | undefined): S3ecRecord['s3ec'] =>
  envelope && { cek_alg: envelope.cekAlg, wrap_alg: envelope.wrapAlg, envelope: envelope.location, matdesc: envelope.matdesc }

export async function decryptS3ecTree(options: S3ecDecryptOptions): Promise<TreeSummary> {
  const started = performance.now()
  const unsupported = [options.dryRun && '--dry-run', options.sync && '--sync', options.decode && '--decode', options.buffer && '--buffer', options.output === '-' && '-o -'].filter(Boolean)
  // Stdout would receive plaintext before the GCM tag is checked at the end of the object.
  if (unsupported.length) throw new UsageError(`--from s3ec does not take ${unsupported.join(', ')} (yet): write to a file or directory`)
  const warn = options.warn ?? ((message: string) => process.stderr.write(`envcrypt: warning: ${message}\n`))
  const planned = (await planFiles(
    { inputs: options.inputs, output: options.output, recursive: options.recursive ?? false, suffix: options.suffix ?? '.decrypted', followSymlinks: options.followSymlinks, shard: options.shard, manifest: options.manifest, warn },
    options.stores,
  )).filter((file) => !file.input.display.endsWith(INSTRUCTION_SUFFIX))
  const kmsCalls: KmsCallCounts = {}
  const kms = createKmsClient({ kmsCalls, kmsClientConfig: options.kmsClientConfig, kmsTimeoutSeconds: options.kmsTimeoutSeconds })
  const summary: TreeSummary = { files_ok: 0, files_failed: 0, files_skipped: 0, bytes_in: 0, bytes_out: 0, seconds: 0, failures: [], kms_calls: kmsCalls }
  const metadata = openMetadataSink(options.metadataOutput, options.overwriteMetadata ?? false)
  try {
    const keys = await s3ecKeysFromSpecs(options.wrappingKeys.filter((spec) => !isDiscovery(spec)), kms, options.allowLegacyS3ecV1 ?? false, '-w/--wrapping-keys')
    options.onPlan?.(planned.length, planned.reduce((sum, file) => sum + (file.input.size ?? 0), 0))
    const limit = pLimit(options.jobs ?? DEFAULT_JOBS)
    await Promise.all(planned.map((file) => limit(() => decryptObject(file, keys, options, summary, (record) => metadata.write(record as unknown as MetadataRecord)))))
  } finally {
    kms.destroy()
    await metadata.close()
  }
  summary.seconds = Math.round((performance.now() - started) / 10) / 100
  if (options.signal?.aborted) summary.interrupted = String(options.signal.reason ?? 'aborted')
  return summary
}

function isDiscovery(spec: DecryptTreeOptions['wrappingKeys'][number]): boolean {
  return Array.isArray(spec) ? spec.some((token) => token.toLowerCase() === 'discovery=true') : spec.discovery
}

async function decryptObject(file: PlannedFile, keys: S3ecKeys, options: S3ecDecryptOptions, summary: TreeSummary, writeMetadata: (record: S3ecRecord) => void): Promise<void> {
  if (options.signal?.aborted) return
  const event: FileEvent = { input: file.input.display, output: file.output.display, status: 'ok', bytesIn: 0, bytesOut: 0 }
  let writer: OutputWriter | undefined
  let envelope: S3ecEnvelope | undefined
  try {
    if (options.skipExisting && (await file.output.exists())) {
      event.status = 'skipped'
      summary.files_skipped++
      options.onFile?.(event)
      return
    }
    const raw = await file.input.open()
    let bytesOut = 0
    const plaintext = (async function* () {
      for await (const chunk of decodeS3ecObject(file.input, raw, keys, options.stores ?? [], (found) => (envelope = found))) {
        bytesOut += chunk.length
        yield chunk
      }
    })()
    writer = await file.output.open({ mode: 0o600, fsync: options.fsync ?? false, noClobber: options.noOverwrite ?? false })
    await pipeline(Readable.from(plaintext), writer.stream)
    await writer.commit({ noClobber: options.noOverwrite ?? false })
    Object.assign(event, { bytesIn: file.input.size ?? 0, bytesOut })
    summary.files_ok++
    summary.bytes_in += file.input.size ?? 0
    summary.bytes_out += bytesOut
    writeMetadata({ input: file.input.display, mode: 'decrypt', output: file.output.display, s3ec: describeEnvelope(envelope) })
  } catch (err) {
    await writer?.abort()
    const message = options.signal?.aborted ? 'interrupted' : describeError(err)
    Object.assign(event, { status: 'failed', error: message })
    if (!options.signal?.aborted) {
      summary.files_failed++
      summary.failures.push({ input: file.input.display, error: message })
      writeMetadata({ error: message, input: file.input.display, mode: 'decrypt', output: file.output.display, s3ec: describeEnvelope(envelope) })
    }
  }
  options.onFile?.(event)
}
