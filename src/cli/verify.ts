// Flags of `envcrypt verify` and the glue to verifyTree; main.ts only registers the command. The library
// (and with it the SDK) is imported when the command runs, not when the CLI starts.
import type { Argv, CommandModule } from 'yargs'
import { COMMITMENT_POLICIES, type CommitmentPolicyName } from '../message/algorithms.js'
import { parseContextPairs, splitGroup } from './args.js'
import { UsageError } from '../errors.js'
import { parseCachingSpec } from '../keys/materials.js'
import { parseShard } from '../store/shard.js'
import { checkOutputArgs, startSession } from './session.js'
import { loadManifest } from './manifest.js'

const VERIFY_DESCRIPTION = 'prove that every message of a tree or bucket is intact and decrypts with these keys, writing no plaintext (--against: and equals its plaintext)'

function verifyOptions(y: Argv) {
  return y
    .usage('$0 verify -i INPUT... -w KEY-SPEC... [--against PLAINTEXT] [options]')
    .option('input', { alias: 'i', type: 'string', array: true, describe: 'message file, directory, glob pattern, s3://bucket/prefix/, or - for stdin' })
    .option('recursive', { alias: ['r', 'R'], type: 'boolean', describe: 'process directories recursively' })
    .option('wrapping-keys', { alias: 'w', type: 'string', array: true, describe: 'key spec, as for -d; repeat for several' })
    .option('encryption-context', { alias: 'c', type: 'string', array: true, describe: 'key=value pairs each message must carry (a bare key must exist)' })
    .option('caching', { type: 'string', array: true, describe: 'capacity=N max_age=SECONDS: one KMS Decrypt per data key' })
    .option('commitment-policy', { type: 'string', choices: Object.keys(COMMITMENT_POLICIES), default: 'require-encrypt-require-decrypt' })
    .option('decrypt-unsigned', { type: 'boolean', describe: 'refuse signed messages' })
    .option('max-length', { type: 'number', describe: 'largest frame (or non-framed body) to accept' })
    .option('max-encrypted-data-keys', { type: 'number', describe: 'refuse messages with more encrypted data keys' })
    .option('against', { type: 'string', describe: 'directory or s3:// prefix of the plaintext: each message must decrypt to exactly its file, and each file must have a message' })
    .option('suffix', { type: 'string', describe: 'with --against: the suffix encrypt added to message names (default .encrypted; bare --suffix: none)' })
    .option('suppress-metadata', { alias: 'S', type: 'boolean', describe: 'write no metadata (the default for verify)' })
    .option('metadata-output', { type: 'string', describe: 'metadata file (JSON Lines, appended) or -: one record per message, "output": null, "verified": true|false' })
    .option('overwrite-metadata', { type: 'boolean', describe: 'overwrite the metadata file instead of appending' })
    .option('summary', { type: 'string', describe: 'write a JSON run summary to FILE or - (stdout)' })
    .option('jobs', { alias: 'j', type: 'number', describe: 'files processed at once' })
    .option('shard', { type: 'string', describe: 'verify only shard I of N (I/N), or `env` (see docs/SCALE.md)' })
    .option('shard-index-env', { type: 'string', describe: 'read the shard index from this environment variable' })
    .option('shard-count', { type: 'number', describe: 'number of shards, with --shard env or --shard-index-env' })
    .option('manifest', { type: 'string', describe: 'work list instead of listing: one relative path per line, or an S3 Inventory CSV' })
    .option('follow-symlinks', { type: 'boolean', describe: 'follow symlinks that point outside the input directory' })
    .option('engine', { type: 'string', choices: ['pool', 'js', 'sdk'], describe: 'message engine, as for -d' })
    .option('sse-c-key', { type: 'string', describe: 'fileb://PATH: the SSE-C key the S3 objects were stored with' })
    .option('s3-endpoint', { type: 'string', describe: 'S3 endpoint URL (default: AWS_ENDPOINT_URL_S3 or AWS)' })
    .option('s3-force-path-style', { type: 'boolean', describe: 'address buckets as ENDPOINT/bucket (MinIO, Ceph)' })
    .option('verbose', { alias: 'v', type: 'count', describe: 'more output on stderr' })
    .option('quiet', { alias: 'q', type: 'boolean', describe: 'only errors on stderr' })
    .example('$0 verify -r -i enc/ -w provider=raw-aes key=k1 material=file://key.bin', 'check that every message under enc/ is intact and decrypts')
    .example('$0 verify -r -i s3://backups/2026/ -w key=$KEY_ARN --caching capacity=100 max_age=300 --summary -', 'check a bucket prefix, streamed, one KMS call per data key')
    .example('$0 verify -r -i enc/ --against data/ -w key=$KEY_ARN', 'also check that enc/X.encrypted decrypts to exactly data/X, and that every file of data/ has a message')
}

interface VerifyArgs {
  input?: string[]
  recursive?: boolean
  wrappingKeys?: string[]
  encryptionContext?: string[]
  caching?: string[]
  commitmentPolicy: CommitmentPolicyName
  decryptUnsigned?: boolean
  maxLength?: number
  maxEncryptedDataKeys?: number
  against?: string
  suffix?: string
  suppressMetadata?: boolean
  metadataOutput?: string
  overwriteMetadata?: boolean
  summary?: string
  jobs?: number
  shard?: string
  shardIndexEnv?: string
  shardCount?: number
  manifest?: string
  followSymlinks?: boolean
  engine?: 'pool' | 'js' | 'sdk'
  sseCKey?: string
  s3Endpoint?: string
  s3ForcePathStyle?: boolean
  verbose: number
  quiet?: boolean
}

/** The `verify` command; `setExitCode` receives 0 (all verified), 1 (some failed) or 130/143 (interrupted). */
export function verifyCommand(setExitCode: (code: number) => void): CommandModule {
  return {
    command: 'verify',
    describe: VERIFY_DESCRIPTION,
    builder: (y) => verifyOptions(y),
    handler: async (argv) => setExitCode(await runVerify(argv as unknown as VerifyArgs)),
  }
}

async function runVerify(args: VerifyArgs): Promise<number> {
  if (!args.input?.length) throw new UsageError('-i/--input is required')
  if (!args.wrappingKeys?.length) throw new UsageError('-w/--wrapping-keys is required')
  if (args.suffix !== undefined && args.against === undefined) throw new UsageError('--suffix applies only with --against')
  // Neither a metadata destination nor -S is required: verify writes nothing unless asked.
  checkOutputArgs({ ...args, suppressMetadata: args.suppressMetadata || args.metadataOutput === undefined })
  if (args.caching && !args.caching.length) throw new UsageError('--caching needs capacity=N max_age=SECONDS')
  const requiredContext = parseContextPairs((args.encryptionContext ?? []).flatMap(splitGroup), true)
  const session = await startSession(args)
  const stores = await s3Stores(args)
  const { verifyTree } = await import('../verify.js')
  const summary = await verifyTree({
    stores,
    inputs: args.input,
    recursive: args.recursive,
    against: args.against,
    suffix: args.suffix,
    wrappingKeys: args.wrappingKeys.map(splitGroup),
    caching: args.caching ? parseCachingSpec(args.caching.flatMap(splitGroup)) : undefined,
    commitmentPolicy: args.commitmentPolicy,
    unsignedOnly: Boolean(args.decryptUnsigned),
    requiredContext,
    maxLength: args.maxLength,
    maxEncryptedDataKeys: args.maxEncryptedDataKeys,
    metadataOutput: args.suppressMetadata ? undefined : args.metadataOutput,
    overwriteMetadata: args.overwriteMetadata,
    jobs: args.jobs,
    followSymlinks: args.followSymlinks,
    engine: args.engine,
    shard: parseShard(args),
    manifest: args.manifest !== undefined ? await loadManifest(args.manifest, args.input, stores, session.warn, parseShard(args)) : undefined,
    signal: session.signal,
    warn: session.warn,
    onFile: session.onFile,
    onPlan: session.onPlan,
  }).finally(() => session.stopProgress())
  return session.finish(summary, 'verified')
}

/** The S3 store when an input, --against or --manifest is an s3:// URI (loaded only then). */
async function s3Stores(args: VerifyArgs) {
  const uris = [...args.input!, args.against ?? '', args.manifest ?? '']
  if (!uris.some((uri) => uri.startsWith('s3://'))) {
    if (args.sseCKey !== undefined || args.s3Endpoint !== undefined || args.s3ForcePathStyle) throw new UsageError('--sse-c-key, --s3-endpoint and --s3-force-path-style apply only with an s3:// input or --against')
    return []
  }
  const { s3Store } = await import('../store/s3.js')
  return [s3Store({ endpoint: args.s3Endpoint, forcePathStyle: args.s3ForcePathStyle, sseCustomerKey: args.sseCKey })]
}
