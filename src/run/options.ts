// The options and results of a tree run, shared by the library entry (tree.ts), the per-file step
// (run/file.ts) and the CLI. Types only.
import type { Writable } from 'node:stream'
import type { CommitmentPolicyName } from '../message/algorithms.js'
import type { ByteSource, EncryptMessageOptions, Engine, MessageResult } from '../message/engine.js'
import type { KmsCallCounts, KmsRunOptions, WrappingKeySpec } from '../keys/keyrings.js'
import type { CachingSettings } from '../keys/materials.js'
import type { ManifestEntry, Shard } from '../store/shard.js'
import type { Store } from '../store/plan.js'
import type { InputItem, OutputTarget } from '../store/local.js'
import type { PlannedAction } from '../store/dry-run.js'

export interface CommonTreeOptions {
  /** Files, directories, glob patterns, `-` for stdin, or (with S3 support) `s3://` URIs. */
  inputs: string[]
  /** A file, a directory, `-` for stdout, or an `s3://` URI. */
  output: string
  recursive?: boolean
  /** Appended to each output name when the output is a directory; default `.encrypted`/`.decrypted`. */
  suffix?: string
  /** `-w` groups: parsed specs, or raw `name=value` token lists as on the command line. */
  wrappingKeys: Array<WrappingKeySpec | string[]>
  caching?: CachingSettings
  commitmentPolicy?: CommitmentPolicyName
  maxEncryptedDataKeys?: number
  /** Metadata stream target: a file path or `-`; undefined suppresses it. */
  metadataOutput?: string
  overwriteMetadata?: boolean
  /** Files processed at once. */
  jobs?: number
  /** Leave outputs that already exist alone (counted as skipped). */
  skipExisting?: boolean
  /** Skip files whose output records the same source size and mtime (S3 outputs; as `aws s3 sync`). */
  sync?: boolean
  /** Never replace an existing output: such files fail instead. */
  noOverwrite?: boolean
  /** Asked before replacing an existing output (`--interactive`); false skips the file. */
  confirmOverwrite?: (path: string) => Promise<boolean>
  fsync?: boolean
  followSymlinks?: boolean
  engine?: 'pool' | 'js' | 'sdk'
  /** Extra KMS client settings (endpoint overrides in tests and benchmarks). */
  kmsClientConfig?: Record<string, unknown>
  /** Seconds a KMS attempt may take to connect and to be answered (`--kms-timeout`). */
  kmsTimeoutSeconds?: number
  /** Process only this shard of the inputs (`--shard I/N`). */
  shard?: Shard
  /** Work list replacing the listing of the single input root (`--manifest`). */
  manifest?: ManifestEntry[]
  /** No output tree: each input's target comes from here (verify's checks); `output` is then unused. */
  outputFor?: (input: InputItem) => OutputTarget
  /** Remote stores (S3) the planner may use. */
  stores?: readonly Store[]
  signal?: AbortSignal
  warn?: (message: string) => void
  onFile?: (event: FileEvent) => void
  /** Called before work starts with the number of planned files and their known total size. */
  onPlan?: (files: number, bytes: number) => void
  /** Plan only: read no key, write nothing; the summary lists `planned` actions. */
  dryRun?: boolean
  /** Replaces the engine call for each file (reencrypt streams a decrypt into an encrypt). */
  messageStage?: (setup: MessageStageSetup) => MessageStage
}

export interface MessageStageSetup {
  engine: Engine
  /** The run's KMS call counters: the stage's own keyrings count into the same summary. */
  kmsCalls: KmsCallCounts
  warn: (message: string) => void
  /** The run's KMS timeout and run-wide error listener, for the stage's own keyrings. */
  kms: KmsRunOptions
}

export interface MessageStage {
  run(input: ByteSource, output: Writable, encrypt: EncryptMessageOptions): Promise<MessageResult>
  dispose(): void
}

export interface EncryptTreeOptions extends CommonTreeOptions {
  /** Encryption context stored in every message. */
  encryptionContext?: Record<string, string>
  algorithm?: string
  frameLength?: number
  /** Base64-encode the output (`--encode`). */
  encode?: boolean
  /** Turns each input's bytes into the plaintext to encrypt (`migrate` decodes legacy formats here). */
  transformSource?: SourceTransformer
  /** Inputs for which this returns false are left out of the run entirely (not counted). */
  selectInput?: (input: InputItem) => boolean
}

// ---- the source-transformer hook (used by migrate.ts) ----
export type SourceTransformer = (input: InputItem, raw: ByteSource) => Promise<TransformedSource>

export interface TransformedSource {
  source: ByteSource
  /** Exact plaintext size if known (caching needs it); the input's own size no longer applies. */
  plaintextLength?: number
  /** Runs once the output is committed, before the file counts as done; a throw marks the file failed. */
  afterCommit?: (output: CommittedOutput) => Promise<void>
}

interface CommittedOutput {
  /** Decrypts the message just written, with this run's keyring, into `sink`. */
  decryptInto(sink: Writable): Promise<MessageResult>
}

export interface DecryptTreeOptions extends CommonTreeOptions {
  /** Pairs that must be in each message's context; a `null` value only requires the key. */
  requiredContext?: Record<string, string | null>
  /** Refuse signed messages (`--decrypt-unsigned`). */
  unsignedOnly?: boolean
  maxLength?: number
  /** Input is base64 (`--decode`). */
  decode?: boolean
  /** On stdout, withhold all output until the message is authenticated. */
  buffer?: boolean
}

export interface FileEvent {
  input: string
  output: string
  status: 'ok' | 'failed' | 'skipped'
  bytesIn: number
  bytesOut: number
  error?: string
  /** The file failed of the run-wide error that stopped the run (TreeSummary.stopped): reported once, not per file. */
  runWide?: boolean
}

export interface TreeSummary {
  files_ok: number
  files_failed: number
  files_skipped: number
  bytes_in: number
  bytes_out: number
  seconds: number
  failures: Array<{ input: string; error: string }>
  kms_calls: KmsCallCounts
  interrupted?: string
  /** The error that stopped the run because it would fail every file (no credentials, KMS not answering, ...). */
  stopped?: string
  /** The metadata file could not be written (the outputs were): the run fails with this line. */
  metadata_error?: string
  /** Files never started because the run stopped (present with `stopped`). */
  files_not_attempted?: number
  /** Dry runs only: what would be done, file by file. */
  planned?: PlannedAction[]
}
