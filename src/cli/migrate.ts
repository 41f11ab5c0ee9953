// Flags of `envcrypt migrate` and the glue to migrateTree; cli.ts only registers the command.
import type { Argv } from 'yargs'
import { ALGORITHM_NAMES, COMMITMENT_POLICIES, type CommitmentPolicyName } from '../message/algorithms.js'
import { parseContextPairs, splitGroup } from './args.js'
import { UsageError } from '../errors.js'
import { parseCachingSpec } from '../keys/materials.js'
import { checkOutputArgs, startSession } from './session.js'
import { DEFAULT_DATA_KEY_SUFFIX, LEGACY_SCHEMES, MIGRATED_FROM_KEY, migrateTree, type LegacyScheme } from '../migrate.js'
import { defaultJobs } from '../run/defaults.js'

export function migrateOptions(y: Argv) {
  return y
    .option('from', { type: 'string', choices: LEGACY_SCHEMES, demandOption: true, describe: 'the legacy scheme the inputs were written with' })
    .option('input', { alias: 'i', type: 'string', array: true, describe: 'legacy file, directory or glob pattern' })
    .option('output', { alias: 'o', type: 'string', describe: 'file or directory (created if missing)' })
    .option('recursive', { alias: ['r', 'R'], type: 'boolean', describe: 'process directories recursively' })
    .option('wrapping-keys', { alias: 'w', type: 'string', array: true, describe: 'key spec for the new messages, as for -e' })
    .option('encryption-context', { alias: 'c', type: 'string', array: true, describe: `key=value pairs, added to ${MIGRATED_FROM_KEY}=SCHEME` })
    .option('data-key-file', { type: 'string', describe: 'openssl-kms: the KMS ciphertext blob of the data key (raw or base64) for all files' })
    .option('data-key-suffix', { type: 'string', describe: `openssl-kms: each FILE's blob is FILE+SUFFIX beside it (default ${DEFAULT_DATA_KEY_SUFFIX}); such files are not migrated` })
    .option('key-index', { type: 'string', describe: 'ddb-ctr: the key table as exported by aws dynamodb scan --output json' })
    .option('legacy-region', { type: 'string', describe: 'region of the KMS key that wrapped the legacy data keys (default: the standard chain)' })
    .option('legacy-profile', { type: 'string', describe: 'AWS profile for the legacy data keys (default: the standard chain)' })
    .option('from-wrapping-keys', { alias: 'W', type: 'string', array: true, describe: 's3ec: keys the objects were wrapped with (aws-kms key= limits KMS; raw-aes/raw-rsa material= for AES/GCM and RSA-OAEP-SHA1)' })
    .option('allow-legacy-s3ec-v1', { type: 'boolean', describe: 's3ec: also read AES-CBC (v1) objects, which are not authenticated' })
    .option('delete-source', { type: 'boolean', describe: 'delete each source after its message was written and decrypted back to the same bytes' })
    .option('caching', { type: 'string', array: true, describe: 'capacity=N max_age=SECONDS [max_messages_encrypted=N] [max_bytes_encrypted=N]' })
    .option('commitment-policy', { type: 'string', choices: Object.keys(COMMITMENT_POLICIES), default: 'require-encrypt-require-decrypt' })
    .option('algorithm', { type: 'string', describe: `algorithm suite: ${ALGORITHM_NAMES.join(', ')}` })
    .option('frame-length', { type: 'number', describe: 'frame length in bytes (default 4096)' })
    .option('suppress-metadata', { alias: 'S', type: 'boolean', describe: 'write no metadata' })
    .option('metadata-output', { type: 'string', describe: 'metadata file (JSON Lines, appended) or -' })
    .option('overwrite-metadata', { type: 'boolean', describe: 'overwrite the metadata file instead of appending' })
    .option('suffix', { type: 'string', describe: 'suffix for outputs in a directory (default .encrypted; bare --suffix: none)' })
    .option('jobs', { alias: 'j', type: 'number', describe: `files processed at once (default ${defaultJobs()})` })
    .option('skip-existing', { type: 'boolean', describe: 'leave outputs that already exist alone (resume an interrupted run)' })
    .option('summary', { type: 'string', describe: 'write a JSON run summary to FILE or - (stdout)' })
    .option('sync', { type: 'boolean', describe: 'S3 output: skip sources whose object records the same size and modification time (as aws s3 sync)' })
    .option('fsync', { type: 'boolean', describe: 'flush each output and its directory to disk around the rename' })
    .option('follow-symlinks', { type: 'boolean', describe: 'follow symlinks that point outside the input directory' })
    .option('engine', { type: 'string', choices: ['js', 'sdk'], describe: 'message engine' })
    .option('s3-endpoint', { type: 'string', describe: 'S3 endpoint URL, for s3:// inputs or output (default: AWS_ENDPOINT_URL_S3 or AWS)' })
    .option('s3-force-path-style', { type: 'boolean', describe: 'address buckets as ENDPOINT/bucket (MinIO, Ceph)' })
    .option('verbose', { alias: 'v', type: 'count', describe: 'more output on stderr' })
    .option('quiet', { alias: 'q', type: 'boolean', describe: 'only errors on stderr' })
    .example('$0 migrate --from cloudonaut-v1 -r -i old/ -o new/ -w key=$KEY_ARN --metadata-output meta.jsonl', 'migrate a tree written by s3-at-rest-encryption')
    .example('$0 migrate --from s3ec -r -i s3://bucket/cse/ -o s3://bucket/sdk/ -w key=$NEW_KEY_ARN -W key=$OLD_KEY_ARN -S', 'turn S3 Encryption Client objects into Encryption SDK messages')
    .example('$0 migrate --from ddb-ctr -r -i old/ -o new/ --key-index scan.json -w key=$KEY_ARN -S --delete-source', 'migrate, removing each source once verified')
}

export interface MigrateArgs {
  from: LegacyScheme
  input?: string[]
  output?: string
  recursive?: boolean
  wrappingKeys?: string[]
  encryptionContext?: string[]
  dataKeyFile?: string
  dataKeySuffix?: string
  keyIndex?: string
  legacyRegion?: string
  legacyProfile?: string
  fromWrappingKeys?: string[]
  allowLegacyS3ecV1?: boolean
  deleteSource?: boolean
  caching?: string[]
  commitmentPolicy: CommitmentPolicyName
  algorithm?: string
  frameLength?: number
  suppressMetadata?: boolean
  metadataOutput?: string
  overwriteMetadata?: boolean
  suffix?: string
  jobs?: number
  skipExisting?: boolean
  summary?: string
  fsync?: boolean
  sync?: boolean
  followSymlinks?: boolean
  engine?: 'js' | 'sdk'
  s3Endpoint?: string
  s3ForcePathStyle?: boolean
  verbose: number
  quiet?: boolean
}

/** Runs `envcrypt migrate`; returns the exit code (0 all migrated, 1 some failed, 130/143 interrupted). */
export async function runMigrate(args: MigrateArgs): Promise<number> {
  if (!args.input?.length) throw new UsageError('-i/--input is required')
  if (args.output === undefined) throw new UsageError('-o/--output is required')
  if (args.output === '-') throw new UsageError('migrate writes files: -o must be a file or directory')
  checkOutputArgs(args)
  const session = await startSession(args)
  const summary = await migrateTree({
    from: args.from,
    inputs: args.input,
    output: args.output,
    recursive: args.recursive,
    suffix: args.suffix,
    wrappingKeys: (args.wrappingKeys ?? []).map(splitGroup),
    encryptionContext: parseContextPairs((args.encryptionContext ?? []).flatMap(splitGroup), false) as Record<string, string>,
    dataKeyFile: args.dataKeyFile,
    dataKeySuffix: args.dataKeySuffix,
    keyIndex: args.keyIndex,
    legacyRegion: args.legacyRegion,
    legacyProfile: args.legacyProfile,
    deleteSource: args.deleteSource,
    fromWrappingKeys: (args.fromWrappingKeys ?? []).map(splitGroup),
    allowLegacyS3ecV1: args.allowLegacyS3ecV1,
    caching: args.caching ? parseCachingSpec(args.caching.flatMap(splitGroup)) : undefined,
    commitmentPolicy: args.commitmentPolicy,
    algorithm: args.algorithm,
    frameLength: args.frameLength,
    metadataOutput: args.suppressMetadata ? undefined : args.metadataOutput,
    overwriteMetadata: args.overwriteMetadata,
    jobs: args.jobs,
    skipExisting: args.skipExisting,
    fsync: args.fsync,
    sync: args.sync,
    followSymlinks: args.followSymlinks,
    engine: args.engine,
    stores: await s3Stores(args),
    signal: session.signal,
    warn: session.warn,
    onFile: session.onFile,
    onPlan: session.onPlan,
  })
  return session.finish(summary, `migrated (from ${args.from})`)
}

/** The S3 store when an input or the output is an s3:// URI (loaded lazily, as in cli.ts). */
async function s3Stores(args: MigrateArgs) {
  if (![args.output!, ...args.input!].some((uri) => uri.startsWith('s3://'))) return []
  const { s3Store } = await import('../store/s3.js')
  return [s3Store({ endpoint: args.s3Endpoint, forcePathStyle: args.s3ForcePathStyle })]
}
