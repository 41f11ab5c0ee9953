// Runs the real CLI binary (dist/cli.js) as a child process, as a user would.
import { spawn } from 'node:child_process'
import { mkdtempSync, mkdirSync, writeFileSync, readFileSync, readdirSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { randomBytes } from 'node:crypto'

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
export const CLI = join(ROOT, 'dist', 'cli.js')
// A copy of ../shared/vectors/python-cli (messages written by the official aws-encryption-cli), kept in the
// repository so a clean clone tests interoperability on its own.
export const VECTORS = join(ROOT, 'fixtures', 'vectors', 'python-cli')

export interface CliResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: Buffer
  stderr: string
}

export function runCli(args: string[], options: { cwd?: string; input?: Buffer | string; env?: Record<string, string | undefined> } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      cwd: options.cwd,
      env: { ...process.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: undefined, ...options.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    const out: Buffer[] = []
    const err: Buffer[] = []
    child.stdout.on('data', (d) => out.push(d))
    child.stderr.on('data', (d) => err.push(d))
    child.on('error', reject)
    child.on('close', (code, signal) => resolve({ code, signal, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString() }))
    child.stdin.on('error', () => undefined)
    child.stdin.end(options.input ?? '')
  })
}

export function tempDir(prefix = 'envcrypt-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix))
}

/** A fresh 32-byte raw AES key file (mode 0600) and its -w spec. */
export function rawAesKey(dir: string, name = 'k1'): { path: string; spec: string[] } {
  const path = join(dir, `${name}.key`)
  writeFileSync(path, randomBytes(32), { mode: 0o600 })
  return { path, spec: ['-w', 'provider=raw-aes', `key=${name}`, `material=file://${path}`] }
}

export function writeTree(root: string, files: Record<string, Buffer | string>): void {
  for (const [rel, content] of Object.entries(files)) {
    const path = join(root, rel)
    mkdirSync(dirname(path), { recursive: true })
    writeFileSync(path, content)
  }
}

/** All regular files under root, relative, sorted. */
export function listFiles(root: string): string[] {
  return readdirSync(root, { recursive: true })
    .map(String)
    .filter((rel) => statSync(join(root, rel)).isFile())
    .sort()
}

export function readJsonLines(path: string): any[] {
  return readFileSync(path, 'utf8').trim().split('\n').filter(Boolean).map((line) => JSON.parse(line))
}
