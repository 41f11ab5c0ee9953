// A few typed errors, each with a one-line, user-facing message. Anything else that reaches the CLI is
// reported by `describeError`, which also turns the SDK's and Node's messages into one line.

/** Something went wrong while processing; the message is safe to show (never contains secrets). */
export class EnvcryptError extends Error {
  override name = 'EnvcryptError'
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
  }
}

/** A flag, key spec or argument is wrong: the user must change the command. Exit code 2. */
export class UsageError extends EnvcryptError {
  override name = 'UsageError'
}

/** Cryptographic refusal: authentication failed, wrong key, policy violation, context mismatch. */
export class IntegrityError extends EnvcryptError {
  override name = 'IntegrityError'
}

/** The run was interrupted by a signal; exit code 128 + signal number. */
export class InterruptedError extends EnvcryptError {
  override name = 'InterruptedError'
  constructor(readonly signal: NodeJS.Signals) {
    super(`interrupted by ${signal}`)
  }
}

/** `work`, or an InterruptedError as soon as `signal` aborts (a file waiting on KMS retries must not hold
 *  an interrupted run; whatever `work` does later goes to an aborted writer and is discarded). */
export function untilAborted<T>(signal: AbortSignal | undefined, work: Promise<T>): Promise<T> {
  if (!signal) return work
  work.catch(() => undefined)
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new InterruptedError(String(signal.reason ?? 'SIGTERM') as NodeJS.Signals))
    if (signal.aborted) return onAbort()
    signal.addEventListener('abort', onAbort, { once: true })
    const settle = () => signal.removeEventListener('abort', onAbort)
    work.then((value) => (settle(), resolve(value)), (err) => (settle(), reject(err)))
  })
}

const SDK_MESSAGE_HINTS: Array<[RegExp, string]> = [
  [/Unsupported state or unable to authenticate data|unable to authenticate/i, 'authentication failed: the message was altered or the key is wrong'],
  [/Invalid Signature/i, 'signature verification failed: the message was altered'],
  [/Commitment does not match/i, 'key commitment check failed: the message was altered or the key is wrong'],
  [/Unable to decrypt data key|unencryptedDataKey has not been set/i, 'no wrapping key could decrypt the data key (wrong key, or key not allowed)'],
  [/maxEncryptedDataKeys/i, 'message has more encrypted data keys than --max-encrypted-data-keys allows'],
  [/maxBodySize/i, 'frame length exceeds --max-length'],
  [/Unsupported algorithm suite|Unsupported suite|Algorithm suite/i, 'unsupported or unknown algorithm suite'],
  [/Malformed Header|Unsupported version|Unsupported type|supported message format version/i, 'not an AWS Encryption SDK message (malformed header)'],
  [/commitment policy/i, 'message refused by the commitment policy (see --commitment-policy)'],
  [/signature policy|signed/i, 'message is signed; --decrypt-unsigned refuses signed messages'],
]

/** One line describing `err` for the user. Known SDK messages get a plainer wording plus the original. */
export function describeError(err: unknown): string {
  if (err instanceof EnvcryptError) return oneLine(err.message)
  const raw = err instanceof Error ? err.message || err.name : String(err)
  const code = (err as { code?: string })?.code
  if (code === 'ENOENT') return `no such file or directory: ${(err as { path?: string }).path ?? raw}`
  if (code === 'EACCES' || code === 'EPERM') return `permission denied: ${(err as { path?: string }).path ?? raw}`
  if (code === 'ENOSPC') return 'no space left on device'
  const awsName = (err as { name?: string; __type?: string })?.name
  if (awsName && /Exception$|Error$/.test(awsName) && awsName !== 'Error' && awsName !== 'TypeError') {
    return oneLine(`${awsName}: ${raw}`)
  }
  for (const [pattern, plain] of SDK_MESSAGE_HINTS) {
    if (pattern.test(raw)) return oneLine(`${plain} (${raw})`)
  }
  return oneLine(raw)
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim()
}

/** A file name safe to print on one line: control characters (a newline in a name could forge a log line)
 *  are shown as JSON-style escapes. */
export function printable(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f]/g, (c) => JSON.stringify(c).slice(1, -1).replace(/^\\u00/, '\\x'))
}
