// The command line: parses flags and calls the library (encryptTree/decryptTree and friends). No
// cryptography or file handling lives here.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'

import { createInterface } from 'node:readline/promises'
import yargs, { type Argv, type CommandModule } from 'yargs'
import { hideBin } from 'yargs/helpers'
import { ALGORITHM_NAMES, COMMITMENT_POLICIES, type CommitmentPolicyName } from '../message/algorithms.js'
import { DEPRECATED_KEY_FLAGS, expandArgfiles, groupRepeatedFlags, parseContextPairs, splitGroup } from './args.js'
import { expandAbbreviations, longFlagNames, unknownFlagsMessage } from './flags.js'
import { describeError, UsageError } from '../errors.js'
import { removeLiveTemporaries } from '../store/local.js'
import { parseCachingSpec } from '../keys/materials.js'
import { DEFAULT_KMS_TIMEOUT, kmsTimeoutSeconds } from '../keys/keyrings.js'
import { canonicalJson } from '../message/metadata.js'
import { defaultJobs, defaultPoolJobs } from '../run/defaults.js'
import type { TreeSummary } from '../tree.js'
import type { MigrateArgs } from './migrate.js'
import type { BenchArgs } from '../bench/bench.js'
import { VERSION } from '../version.js'
import { parseShard } from '../store/shard.js'
import { loadManifest } from './manifest.js'
import { mergeSummaries, readSummaryFile } from './summary.js'
import { inspectCommand, reportCommand } from './tools.js'
import { verifyCommand } from './verify.js'
import { describePlan } from '../store/dry-run.js'
import { checkOutputArgs, exitCodes, startSession, type Session } from './session.js'

// Each command's code loads when it runs (dynamic import()), so that `--version` or an encrypt with a raw
// AES key does not pay for the bench, migrate, the local KMS or the AWS SDK clients. `bench` and `migrate`
// need their modules to declare their flags: they load when their name is on the command line, and
// otherwise appear in the help with their description only.
const BENCH_DESCRIPTION = 'measure encrypt, decrypt and verify throughput and KMS calls, without and with caching (local KMS by default)'
const MIGRATE_DESCRIPTION = 're-encrypt files from a home-made KMS envelope scheme (cloudonaut-v1, openssl-kms, ddb-ctr) or objects of the Amazon S3 Encryption Client (s3ec) as Encryption SDK messages'

const EXAMPLES: Array<[string, string]> = [
  ['$0 keygen --out key.bin', 'make a 32-byte raw AES key file (mode 0600)'],
  ['$0 -e -r -i data/ -o enc/ -w provider=raw-aes key=k1 material=file://key.bin --metadata-output meta.jsonl', 'encrypt a tree with a raw AES key'],
  ['$0 -d -r -i enc/ -o plain/ -w provider=raw-aes key=k1 material=file://key.bin -S', 'decrypt it back'],
  ['$0 -e -i report.pdf -o report.pdf.enc -w key=arn:aws:kms:us-east-1:111122223333:key/... -c team=data -S', 'encrypt one file with a KMS key and an encryption context'],
  ['$0 -e -r -i data/ -o enc/ -w key=$KEY_ARN -S --dry-run', 'list what would be encrypted, reading no key and writing nothing'],
  ['$0 verify -r -i enc/ -w provider=raw-aes key=k1 material=file://key.bin', 'check that every message decrypts and is intact, writing no plaintext'],
  ['$0 inspect enc/report.pdf.encrypted', 'show a message header (suite, context, key providers) without keys'],
  ['$0 reencrypt -r -i enc/ -o rotated/ -W key=alias/old -w key=alias/new -S', 'rotate a tree to new wrapping keys (plaintext never touches disk)'],
  ['$0 completion >> ~/.bashrc', 'shell completion for bash (and zsh)'],
  ['$0 -e -r -i data/ -o enc/ -w key=$KEY_ARN --caching capacity=1 max_age=10 max_messages_encrypted=100 --summary -', 'cache data keys; print KMS calls in the summary'],
]


async function main(argv: string[]): Promise<number> {
  // yargs' completion command prints its script even for --help.
  if (argv[0] === 'completion' && argv.slice(1).some((arg) => arg === '--help' || arg === '-h')) {
    process.stdout.write(COMPLETION_HELP)
    return exitCodes.ok
  }
  const expanded = expandMainAbbreviations(expandArgfiles(argv))
  if (expanded.some((arg) => DEPRECATED_KEY_FLAGS.includes(arg.split('=')[0]!)) && !expanded.includes('-q') && !expanded.includes('--quiet')) {
    process.stderr.write('envcrypt: warning: -m/--master-keys is the aws-encryption-cli 1.x spelling of -w/--wrapping-keys (same key=... provider=... syntax); use -w\n')
  }
  const args = groupRepeatedFlags(expanded)
  let exitCode: number = exitCodes.ok
  const parser = yargs(args)
    .scriptName('envcrypt')
    .version(VERSION)
    .usage('$0 (-e | -d | --decrypt-unsigned) -i INPUT -o OUTPUT -w KEY-SPEC... [options]\n\nEncrypt or decrypt files and directory trees as standard AWS Encryption SDK messages (a drop-in for aws-encryption-cli).')
    .command('$0', 'encrypt or decrypt files', (y) => mainOptions(y), async (argv) => {
      exitCode = await runMain(argv as unknown as MainArgs)
    })
    .command('keygen', 'write a new random raw AES key file (mode 0600)', (y) =>
      y.option('out', { type: 'string', demandOption: true, describe: 'path of the new key file (must not exist)' })
        .option('bytes', { type: 'number', default: 32, choices: [16, 24, 32], describe: 'key size in bytes' })
        .example('$0 keygen --out ~/.envcrypt/key.bin', ''),
      async (argv) => {
        const { keygen } = await import('../keys/keygen.js')
        keygen(argv.out, argv.bytes)
        process.stderr.write(`envcrypt: wrote a ${argv.bytes}-byte AES key to ${argv.out} (mode 0600); use it with -w provider=raw-aes key=NAME material=file://${argv.out}\n`)
      })
    .command('local-kms', 'run a KMS-compatible endpoint on 127.0.0.1 (for tests, demos and benchmarks)', (y) =>
      y.option('port', { type: 'number', default: 0, describe: 'port (0 picks a free one)' })
        .option('state', { type: 'string', describe: 'keep keys in this JSON file (mode 0600) across restarts' })
        .option('create-key', { type: 'boolean', describe: 'create a key and print its ARN' })
        .option('latency-ms', { type: 'number', default: 0, describe: 'delay every answer, to emulate a real KMS round trip' })
        .option('throttle-rate', { type: 'number', default: 0, describe: 'fraction of requests answered with ThrottlingException' })
        .option('region', { type: 'string', describe: 'region in key ARNs (default us-east-1)' })
        .example('$0 local-kms --create-key', 'prints {"endpoint": ..., "keyArn": ...}; then: AWS_ENDPOINT_URL_KMS=<endpoint> envcrypt -e ... -w key=<keyArn>'),
      async (argv) => {
        if (argv.throttleRate < 0 || argv.throttleRate > 1) throw new UsageError('--throttle-rate must be between 0 and 1')
        const { runLocalKms } = await import('../local-kms/server.js')
        await runLocalKms({ port: argv.port, stateFile: argv.state, createKey: argv.createKey, latencyMs: argv.latencyMs, throttleRate: argv.throttleRate, region: argv.region })
      })
    .command(await migrateCommand(args, (code) => (exitCode = code)))
    .command('merge-summaries <files..>', 'merge the --summary files of several workers into one', (y) =>
      y.positional('files', { type: 'string', array: true, describe: 'summary files' })
        .example('$0 merge-summaries summary-*.json > summary.json', 'sum counts, bytes and KMS calls of all shards'),
      (argv) => {
        process.stdout.write(canonicalJson(mergeSummaries((argv.files as string[]).map(readSummaryFile))) + '\n')
      })
    .command('reencrypt', 'move encrypted files to new wrapping keys (key rotation), never writing plaintext to disk', (y) =>
      mainOptions(y)
        .option('from-wrapping-keys', { alias: 'W', type: 'string', array: true, describe: 'the keys that decrypt the existing messages (same syntax as -w); -w names the new keys' })
        .option('suffix', { type: 'string', describe: 'appended to output names (default: none, names are kept)' })
        .hide('encrypt').hide('decrypt').hide('decrypt-unsigned').hide('encode').hide('decode').hide('buffer')
        .example('$0 reencrypt -r -i enc/ -o rotated/ -W key=alias/backup-2025 -w key=alias/backup-2026 -S', 'rotate a tree from one KMS key to another (same file names under rotated/)')
        .example('$0 reencrypt -r -i enc/ -o rotated/ -W provider=raw-aes key=old material=file://old.key -w key=$KEY_ARN --metadata-output meta.jsonl', 'leave a raw AES key for a KMS key; the context of each message is kept'),
      async (argv) => {
        exitCode = await runMain({ ...(argv as unknown as MainArgs), reencrypt: true })
      })
    .command(verifyCommand((code) => (exitCode = code)))
    .command(inspectCommand((code) => (exitCode = code)))
    .command(reportCommand())
    .completion('completion', 'print a bash/zsh completion script (add it with: envcrypt completion >> ~/.bashrc)')
    .command(await benchCommandModule(args))
    .strict()
    .help()
    .alias('h', 'help')
    .wrap(Math.min(110, process.stdout.columns || 100))
    .fail((message, err) => {
      // By now the parser holds the options of the command that failed.
      throw err ?? new UsageError(withUnknownFlagsNamed(message, parser))
    })
  for (const [command, description] of EXAMPLES) parser.example(command, description)
  await parser.parseAsync()
  return exitCode
}

async function migrateCommand(args: readonly string[], setExitCode: (code: number) => void): Promise<CommandModule> {
  if (!args.includes('migrate')) return { command: 'migrate', describe: MIGRATE_DESCRIPTION, handler: () => undefined }
  const { migrateOptions, runMigrate } = await import('./migrate.js')
  return {
    command: 'migrate',
    describe: MIGRATE_DESCRIPTION,
    // The usage line of migrateOptions, then the description (yargs shows none otherwise).
    builder: (y: Argv) => migrateOptions(y).usage(`$0 migrate --from SCHEME -i INPUT -o OUTPUT -w KEY-SPEC... [options]\n\n${MIGRATE_DESCRIPTION}`),
    handler: async (argv) => setExitCode(await runMigrate(argv as unknown as MigrateArgs)),
  }
}

async function benchCommandModule(args: readonly string[]): Promise<CommandModule> {
  if (!args.includes('bench')) return { command: 'bench', describe: BENCH_DESCRIPTION, handler: () => undefined }
  const { benchCommand, benchMain } = await import('../bench/bench.js')
  return {
    command: 'bench',
    describe: BENCH_DESCRIPTION,
    builder: (y: Argv) => benchCommand(y),
    handler: (argv) => benchMain(argv as unknown as BenchArgs),
  }
}

const COMPLETION_HELP = `envcrypt completion

print a bash/zsh completion script for envcrypt on stdout

Examples:
  envcrypt completion >> ~/.bashrc   enable completion in bash
  envcrypt completion >> ~/.zshrc    enable completion in zsh
`

const SUBCOMMANDS = ['keygen', 'local-kms', 'migrate', 'merge-summaries', 'reencrypt', 'verify', 'inspect', 'report', 'completion', 'bench']

/** The main command and reencrypt take their long flags abbreviated, as aws-encryption-cli (argparse) does. */
function expandMainAbbreviations(argv: string[]): string[] {
  const command = argv[0]
  if (argv.includes('--get-yargs-completions') || (command !== 'reencrypt' && SUBCOMMANDS.includes(command ?? ''))) return argv
  let options = mainOptions(yargs([]))
  if (command === 'reencrypt') options = options.option('from-wrapping-keys', { type: 'string' })
  // `--overwrite` exists only as the target of `--no-overwrite`: `--over` means --overwrite-metadata, as in argparse.
  // `--master-key` (the seed blog's spelling) is argparse's prefix of 1.x's `--master-keys`.
  return expandAbbreviations(argv, [...longFlagNames(options), 'master-keys'], ['overwrite'])
}

/** yargs lists an unknown `--bogus-flag` without dashes and twice, as `bogus-flag, bogusFlag`: name each flag
 *  once, with its dashes and the closest known flag. */
export function withUnknownFlagsNamed(message: string, parser?: object): string {
  const match = /^Unknown arguments?: (.*)$/.exec(message)
  if (!match) return message
  const names = match[1]!.split(', ')
  const typed = new Set(names)
  const kept = names.filter((name) => !(/[A-Z]/.test(name) && typed.has(name.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase()))))
  return unknownFlagsMessage(kept, parser ? longFlagNames(parser) : [])
}

function mainOptions(y: Argv) {
  return y
    .option('encrypt', { alias: 'e', type: 'boolean', describe: 'encrypt' })
    .option('decrypt', { alias: 'd', type: 'boolean', describe: 'decrypt' })
    .option('decrypt-unsigned', { type: 'boolean', describe: 'decrypt, refusing signed messages' })
    .option('input', { alias: 'i', type: 'string', array: true, describe: 'file, directory, glob pattern, or - for stdin' })
    .option('output', { alias: 'o', type: 'string', describe: 'file, directory (created if missing), or - for stdout' })
    .option('recursive', { alias: ['r', 'R'], type: 'boolean', describe: 'process directories recursively' })
    .option('wrapping-keys', { alias: 'w', type: 'string', array: true, describe: 'key spec: key=ID [provider=aws-kms|raw-aes|raw-rsa] [region=R] [profile=P] [discovery=true] [discovery-account=A discovery-partition=P] [material=file://PATH] [namespace=NS] [padding=oaep-sha256|oaep-sha1|pkcs1]; repeat for several' })
    .option('encryption-context', { alias: 'c', type: 'string', array: true, describe: 'key=value pairs; on decrypt each must match (a bare key must exist)' })
    .option('caching', { type: 'string', array: true, describe: 'capacity=N max_age=SECONDS [max_messages_encrypted=N] [max_bytes_encrypted=N]' })
    .option('commitment-policy', { type: 'string', choices: Object.keys(COMMITMENT_POLICIES), default: 'require-encrypt-require-decrypt' })
    .option('algorithm', { type: 'string', describe: `algorithm suite: ${ALGORITHM_NAMES.join(', ')}` })
    .option('frame-length', { type: 'number', describe: 'frame length in bytes (default 4096)' })
    .option('max-length', { type: 'number', describe: 'largest frame (or non-framed body) to accept on decrypt' })
    .option('max-encrypted-data-keys', { type: 'number', describe: 'refuse messages with more encrypted data keys' })
    .option('buffer', { alias: 'b', type: 'boolean', describe: 'decrypt to stdout: write nothing until the message is authenticated' })
    .option('suppress-metadata', { alias: 'S', type: 'boolean', describe: 'write no metadata' })
    .option('metadata-output', { type: 'string', describe: 'metadata file (JSON Lines, appended) or -' })
    .option('overwrite-metadata', { type: 'boolean', describe: 'overwrite the metadata file instead of appending' })
    .option('suffix', { type: 'string', describe: 'suffix for outputs in a directory (default .encrypted/.decrypted; bare --suffix: none)' })
    .option('interactive', { type: 'boolean', describe: 'ask before overwriting an existing output' })
    .option('overwrite', { type: 'boolean', default: true, hidden: true })
    .option('no-overwrite', { type: 'boolean', describe: 'never overwrite an existing output (the file is skipped with a warning)' })
    .option('encode', { type: 'boolean', describe: 'base64-encode the output' })
    .option('decode', { type: 'boolean', describe: 'base64-decode the input' })
    .option('from', { type: 'string', choices: ['s3ec'], describe: 'decrypt: the inputs are objects of the Amazon S3 Encryption Client (v2 GCM; v1 CBC with --allow-legacy-s3ec-v1)' })
    .option('allow-legacy-s3ec-v1', { type: 'boolean', describe: 'with --from s3ec: also read AES-CBC (v1) objects, which are not authenticated' })
    .option('verbose', { alias: 'v', type: 'count', describe: 'more output on stderr' })
    .option('quiet', { alias: 'q', type: 'boolean', describe: 'only errors on stderr' })
    .option('jobs', { alias: 'j', type: 'number', describe: `files processed at once (default ${defaultJobs()}; ${defaultPoolJobs()} when all files go local to local through the worker pool)` })
    .option('kms-timeout', { type: 'number', describe: `seconds a KMS request may take to connect and to be answered, per attempt (8 attempts; default ENVCRYPT_KMS_TIMEOUT or ${DEFAULT_KMS_TIMEOUT})` })
    .option('skip-existing', { type: 'boolean', describe: 'leave outputs that already exist alone (resume an interrupted run)' })
    .option('fsync', { type: 'boolean', describe: 'flush each output and its directory to disk around the rename' })
    .option('summary', { type: 'string', describe: 'write a JSON run summary to FILE or - (stdout)' })
    .option('follow-symlinks', { type: 'boolean', describe: 'follow symlinks that point outside the input directory' })
    .option('shard', { type: 'string', describe: 'process only shard I of N (I/N), or `env`: index from JOB_COMPLETION_INDEX / AWS_BATCH_JOB_ARRAY_INDEX (see docs/SCALE.md)' })
    .option('shard-index-env', { type: 'string', describe: 'read the shard index from this environment variable' })
    .option('shard-count', { type: 'number', describe: 'number of shards, with --shard env or --shard-index-env' })
    .option('manifest', { type: 'string', describe: 'work list instead of listing: one relative path per line, or an S3 Inventory CSV' })
    .option('allow-pkcs1-decrypt', { type: 'boolean', describe: 'decrypt legacy PKCS#1 v1.5 RSA messages (padding=pkcs1), which Node 20 refuses (CVE-2023-46809): re-runs under node --security-revert=CVE-2023-46809; only to move them to OAEP with reencrypt' })
    .option('engine', { type: 'string', choices: ['pool', 'js', 'sdk'], describe: 'message engine: pool (the js frame loop on worker threads, default with 2+ cores), js (in-thread) or sdk (the SDK streams, reference)' })
    .option('dry-run', { alias: 'n', type: 'boolean', describe: 'print what would be done (encrypt IN -> OUT per file); read no key, write nothing' })
    // S3 (s3://bucket/prefix inputs and outputs)
    .option('sync', { type: 'boolean', describe: 'S3 output: skip files whose object records the same source size and mtime (as aws s3 sync)' })
    .option('sse', { type: 'string', describe: 'S3 server-side encryption on upload: AES256, aws:kms or aws:kms:dsse' })
    .option('sse-kms-key-id', { type: 'string', describe: 'KMS key for --sse aws:kms' })
    .option('sse-c-key', { type: 'string', describe: 'fileb://PATH: 32-byte SSE-C key, for uploads and reads' })
    .option('storage-class', { type: 'string', describe: 'S3 storage class for uploads (STANDARD, STANDARD_IA, ...)' })
    .option('s3-endpoint', { type: 'string', describe: 'S3 endpoint URL (default: AWS_ENDPOINT_URL_S3 or AWS)' })
    .option('s3-force-path-style', { type: 'boolean', describe: 'address buckets as ENDPOINT/bucket (MinIO, Ceph)' })
}

interface MainArgs {
  encrypt?: boolean
  decrypt?: boolean
  decryptUnsigned?: boolean
  input?: string[]
  output?: string
  recursive?: boolean
  wrappingKeys?: string[]
  encryptionContext?: string[]
  caching?: string[]
  commitmentPolicy: CommitmentPolicyName
  algorithm?: string
  frameLength?: number
  maxLength?: number
  maxEncryptedDataKeys?: number
  buffer?: boolean
  suppressMetadata?: boolean
  metadataOutput?: string
  overwriteMetadata?: boolean
  suffix?: string
  interactive?: boolean
  overwrite: boolean
  encode?: boolean
  decode?: boolean
  from?: 's3ec'
  allowLegacyS3ecV1?: boolean
  verbose: number
  quiet?: boolean
  jobs?: number
  kmsTimeout?: number
  skipExisting?: boolean
  fsync?: boolean
  summary?: string
  followSymlinks?: boolean
  engine?: 'pool' | 'js' | 'sdk'
  sync?: boolean
  sse?: string
  sseKmsKeyId?: string
  sseCKey?: string
  storageClass?: string
  s3Endpoint?: string
  s3ForcePathStyle?: boolean
  shard?: string
  shardIndexEnv?: string
  shardCount?: number
  manifest?: string
  dryRun?: boolean
  allowPkcs1Decrypt?: boolean
  /** Set by the reencrypt command. */
  reencrypt?: boolean
  fromWrappingKeys?: string[]
}

/** The mode: exactly one of encrypt, decrypt, decrypt-unsigned, reencrypt. */
function checkMode(args: MainArgs): { encrypting: boolean; reencrypting: boolean } {
  const reencrypting = Boolean(args.reencrypt)
  if (reencrypting) checkReencryptArgs(args)
  const modes = [args.encrypt && 'encrypt', args.decrypt && 'decrypt', args.decryptUnsigned && 'decrypt-unsigned', reencrypting && 'reencrypt'].filter(Boolean)
  if (modes.length !== 1) throw new UsageError('choose exactly one of -e/--encrypt, -d/--decrypt, --decrypt-unsigned')
  return { encrypting: Boolean(args.encrypt), reencrypting }
}

/** The flags that go with the mode. */
function checkModeArgs(args: MainArgs, encrypting: boolean, reencrypting: boolean): void {
  if (!args.input?.length) throw new UsageError('-i/--input is required')
  if (args.output === undefined) throw new UsageError('-o/--output is required')
  checkOutputArgs(args)
  if (args.caching && !args.caching.length) throw new UsageError('--caching needs capacity=N max_age=SECONDS')
  if (encrypting && (args.decode || args.buffer || args.maxLength !== undefined)) {
    throw new UsageError('--decode, --buffer and --max-length apply to decrypt only')
  }
  if (!encrypting && !reencrypting && (args.encode || args.algorithm || args.frameLength !== undefined)) {
    throw new UsageError('--encode, --algorithm and --frame-length apply to encrypt only')
  }
  if ((args.from !== undefined || args.allowLegacyS3ecV1) && (encrypting || reencrypting || args.decryptUnsigned || args.from !== 's3ec')) {
    throw new UsageError('--from s3ec and --allow-legacy-s3ec-v1 apply to -d/--decrypt only (envcrypt migrate --from s3ec turns such objects into messages)')
  }
}

/** The tree options every mode shares, from the flags and the session. */
async function commonTreeOptions(args: MainArgs, session: Session, wrappingKeys: string[][], encrypting: boolean) {
  const { warn } = session
  const stores = await s3Stores(args, encrypting, warn)
  return {
    stores,
    sync: args.sync,
    inputs: args.input!,
    output: args.output!,
    recursive: args.recursive,
    suffix: args.suffix,
    wrappingKeys,
    caching: args.caching ? parseCachingSpec(args.caching.flatMap(splitGroup)) : undefined,
    commitmentPolicy: args.commitmentPolicy,
    maxEncryptedDataKeys: args.maxEncryptedDataKeys,
    metadataOutput: args.suppressMetadata ? undefined : args.metadataOutput,
    overwriteMetadata: args.overwriteMetadata,
    jobs: args.jobs,
    kmsTimeoutSeconds: kmsTimeoutSeconds(args.kmsTimeout),
    skipExisting: args.skipExisting,
    noOverwrite: args.overwrite === false,
    confirmOverwrite: args.interactive ? (path: string) => confirmOverwrite(path, session.pauseProgress) : undefined,
    fsync: args.fsync,
    followSymlinks: args.followSymlinks,
    engine: args.engine,
    shard: parseShard(args),
    manifest: args.manifest !== undefined ? await loadManifest(args.manifest, args.input!, stores, warn, parseShard(args)) : undefined,
    signal: session.signal,
    warn,
    onFile: session.onFile,
    onPlan: session.onPlan,
    dryRun: args.dryRun,
  }
}

async function runMain(args: MainArgs): Promise<number> {
  const { encrypting, reencrypting } = checkMode(args)
  if (args.allowPkcs1Decrypt) {
    if (encrypting) throw new UsageError('--allow-pkcs1-decrypt applies to decrypt and reencrypt only')
    const { rerunUnderSecurityRevert, underSecurityRevert } = await import('./security-revert.js')
    if (!underSecurityRevert()) return rerunUnderSecurityRevert()
    if (!args.quiet) process.stderr.write('envcrypt: warning: --allow-pkcs1-decrypt: PKCS#1 v1.5 RSA decryption is re-enabled (CVE-2023-46809 reverted), which is open to the Marvin timing attack; use it only to move these messages to OAEP (envcrypt reencrypt ... -w ... padding=oaep-sha256)\n')
  }
  checkModeArgs(args, encrypting, reencrypting)
  const contextTokens = (args.encryptionContext ?? []).flatMap(splitGroup)
  const context = parseContextPairs(contextTokens, !encrypting)
  const session = await startSession(args)
  const wrappingKeys = (args.wrappingKeys ?? []).map(splitGroup)
  if (wrappingKeys.length === 0 && !encrypting && !reencrypting && !args.dryRun) {
    // aws-encryption-cli 1.x decrypted with KMS discovery when no key was named; scripts from then rely on it.
    session.warn('no -w key named: decrypting with KMS discovery (any KMS key a message names that these credentials may use); restrict it with -w discovery=true discovery-account=ACCOUNT discovery-partition=aws, or name the keys with -w key=ARN')
    wrappingKeys.push(['discovery=true'])
  }
  const common = await commonTreeOptions(args, session, wrappingKeys, encrypting)
  let summary: TreeSummary
  const { decryptTree, encryptTree } = await import('../tree.js')
  if (reencrypting) {
    const { reencryptTree } = await import('../reencrypt.js')
    summary = await reencryptTree({
      ...common,
      fromWrappingKeys: (args.fromWrappingKeys ?? []).map(splitGroup),
      requiredContext: context,
      algorithm: args.algorithm,
      frameLength: args.frameLength,
      maxLength: args.maxLength,
    }).finally(() => session.stopProgress())
  } else if (encrypting) {
    summary = await encryptTree({
      ...common,
      encryptionContext: context as Record<string, string>,
      algorithm: args.algorithm,
      frameLength: args.frameLength,
      encode: args.encode,
    }).finally(() => session.stopProgress())
  } else if (args.from === 's3ec') {
    const { decryptS3ecTree } = await import('../run/s3ec-decrypt.js')
    summary = await decryptS3ecTree({ ...common, allowLegacyS3ecV1: args.allowLegacyS3ecV1 }).finally(() => session.stopProgress())
  } else {
    summary = await decryptTree({
      ...common,
      unsignedOnly: Boolean(args.decryptUnsigned),
      requiredContext: context,
      maxLength: args.maxLength,
      decode: args.decode,
      buffer: args.buffer,
    }).finally(() => session.stopProgress())
  }
  const verb = reencrypting ? 're-encrypted' : encrypting ? 'encrypted' : 'decrypted'
  if (summary.planned) {
    for (const line of describePlan(summary.planned)) process.stdout.write(line + '\n')
    if (session.verbosity >= 0) process.stderr.write(`envcrypt: dry run: ${summary.planned.length - summary.files_skipped} file(s) to ${verb.replace(/ed$/, '')}, ${summary.files_skipped} skipped; nothing was read or written\n`)
    return exitCodes.ok
  }
  return session.finish(summary, verb)
}

const S3_FLAGS = ['sse', 'sseKmsKeyId', 'sseCKey', 'storageClass', 's3Endpoint', 's3ForcePathStyle'] as const

/** The S3 store when an input or the output is an s3:// URI; loaded lazily to keep local runs fast. */
async function s3Stores(args: MainArgs, encrypting: boolean, warn: (message: string) => void) {
  const isS3 = (uri: string) => uri.startsWith('s3://')
  const outputIsS3 = isS3(args.output!)
  if (args.sync && !outputIsS3) throw new UsageError('--sync needs an s3:// output')
  if (!outputIsS3 && !args.input!.some(isS3) && !args.manifest?.startsWith('s3://')) {
    const used = S3_FLAGS.find((flag) => args[flag] !== undefined)
    if (used) throw new UsageError(`--${used.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())} applies only with an s3:// input or output`)
    return []
  }
  const { s3Store } = await import('../store/s3.js')
  return [
    s3Store({
      endpoint: args.s3Endpoint,
      forcePathStyle: args.s3ForcePathStyle,
      sse: args.sse,
      sseKmsKeyId: args.sseKmsKeyId,
      sseCustomerKey: args.sseCKey,
      warn,
      storageClass: args.storageClass,
      objectFormat: encrypting ? (args.encode ? 'aws-encryption-sdk-message-base64' : 'aws-encryption-sdk-message') : 'plaintext',
    }),
  ]
}

function checkReencryptArgs(args: MainArgs): void {
  if (args.encrypt || args.decrypt || args.decryptUnsigned) throw new UsageError('reencrypt decrypts and encrypts: drop -e/-d/--decrypt-unsigned')
  if (args.encode || args.decode || args.buffer) throw new UsageError('--encode, --decode and --buffer do not apply to reencrypt')
  if (!args.fromWrappingKeys?.length) throw new UsageError('reencrypt needs the old keys (-W/--from-wrapping-keys) and the new ones (-w)')
}

// Prompts one at a time even with several files in flight.
let promptChain: Promise<unknown> = Promise.resolve()
function confirmOverwrite(path: string, pauseProgress: () => () => void): Promise<boolean> {
  const ask = async () => {
    // The bar would redraw over the prompt, and its clock would count the wait as a stall.
    const resume = pauseProgress()
    const rl = createInterface({ input: process.stdin, output: process.stderr })
    try {
      const answer = await rl.question(`envcrypt: overwrite ${path}? [y/N] `)
      return /^y(es)?$/i.test(answer.trim())
    } finally {
      rl.close()
      resume()
    }
  }
  const result = promptChain.then(ask, ask)
  promptChain = result.catch(() => undefined)
  return result
}

/** Where to look next, on the same line as the error. */
function usageHint(message: string): string {
  if (/--help|did you mean/.test(message)) return ''
  const command = hideBin(process.argv).find((arg) => SUBCOMMANDS.includes(arg))
  return ` (see envcrypt ${command ? command + ' ' : ''}--help)`
}

main(hideBin(process.argv)).then(
  (code) => {
    process.exitCode = code
    // Interrupted: whatever is still pending (a KMS retry, an open stdin) must not keep the process alive.
    if (code === 130 || code === 143) process.exit(code)
  },
  (err) => {
    removeLiveTemporaries()
    process.stderr.write(`envcrypt: error: ${describeError(err)}${err instanceof UsageError ? usageHint(describeError(err)) : ''}\n`)
    process.exitCode = err instanceof UsageError ? exitCodes.usage : exitCodes.failed
  },
)
