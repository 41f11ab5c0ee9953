// Helpers for the fault suites: input fingerprints (no input is ever modified), the CLI as a child process
// that a test can signal, and an unprivileged user for permission tests when the suite runs as root.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { chownSync, lstatSync, readFileSync, readdirSync, readlinkSync } from 'node:fs'
import { join } from 'node:path'
import { expect } from 'vitest'
import { CLI, type CliResult } from './cli.js'

const TEMP_PREFIX = '.envcrypt-tmp-'

/** Every entry under root (files by content hash, symlinks by target, directories by name), with mode bits. */
function fingerprint(root: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const rel of readdirSync(root, { recursive: true }).map(String).sort()) {
    const path = join(root, rel)
    const info = lstatSync(path)
    const mode = (info.mode & 0o7777).toString(8)
    if (info.isSymbolicLink()) out[rel] = `link ${readlinkSync(path)}`
    else if (info.isDirectory()) out[rel] = `dir ${mode}`
    else out[rel] = `file ${mode} ${info.mtimeMs} ${createHash('sha256').update(readFileSync(path)).digest('hex')}`
  }
  return out
}

/** Run `body`, then check nothing under `roots` changed (content, mode, mtime, links). */
export async function expectUntouched<T>(roots: string[], body: () => Promise<T>): Promise<T> {
  const before = roots.map(fingerprint)
  const result = await body()
  roots.forEach((root, i) => expect(fingerprint(root), `input ${root} changed`).toEqual(before[i]))
  return result
}

export function temporariesUnder(root: string): string[] {
  return readdirSync(root, { recursive: true }).map(String).filter((rel) => rel.split('/').pop()!.startsWith(TEMP_PREFIX))
}

export interface RunningCli {
  child: ChildProcess
  result: Promise<CliResult>
}

export interface SpawnOptions {
  env?: Record<string, string | undefined>
  input?: Buffer | string
  /** Keep stdin open (the test writes to it). */
  keepStdinOpen?: boolean
  user?: { uid: number; gid: number }
}

/** The real CLI as a child the test can signal. */
export function spawnCli(args: string[], options: SpawnOptions = {}): RunningCli {
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { ...process.env, ...options.env },
    stdio: ['pipe', 'pipe', 'pipe'],
    ...(options.user ?? {}),
  })
  const out: Buffer[] = []
  const err: Buffer[] = []
  child.stdout!.on('data', (d) => out.push(d))
  child.stderr!.on('data', (d) => err.push(d))
  child.stdin!.on('error', () => undefined)
  if (!options.keepStdinOpen) child.stdin!.end(options.input ?? '')
  const result = new Promise<CliResult>((resolve, reject) => {
    child.on('error', reject)
    child.on('close', (code, signal) => resolve({ code, signal, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString() }))
  })
  return { child, result }
}

export const runCliAs = (args: string[], options: SpawnOptions = {}) => spawnCli(args, options).result

/** Permission bits do not stop root: as root, permission tests run the CLI as `nobody` (uid/gid 65534). */
export const RUNNING_AS_ROOT = process.getuid?.() === 0
export const UNPRIVILEGED = RUNNING_AS_ROOT ? { uid: 65534, gid: 65534 } : undefined

/** Why permission tests cannot run here, or '' when they can. As root they run the CLI as `nobody`, which must
 *  be able to reach the checkout (a clone inside a mode-0700 directory, as `mktemp -d` makes, is out of its reach). */
export const PERMISSION_TESTS_UNAVAILABLE = (() => {
  if (!UNPRIVILEGED) return ''
  const probe = spawnSync(process.execPath, ['-e', `require('node:fs').accessSync(${JSON.stringify(CLI)}, require('node:fs').constants.R_OK)`], { ...UNPRIVILEGED, stdio: 'ignore' })
  return probe.status === 0 ? '' : `uid ${UNPRIVILEGED.uid} cannot read ${CLI} (a parent directory is not searchable by others)`
})()

/** Give the unprivileged user ownership of `paths` (no-op when not root). */
export function handToUnprivileged(...paths: string[]): void {
  if (!UNPRIVILEGED) return
  for (const path of paths) {
    chownSync(path, UNPRIVILEGED.uid, UNPRIVILEGED.gid)
    if (lstatSync(path).isDirectory()) {
      for (const rel of readdirSync(path, { recursive: true }).map(String)) {
        const child = join(path, rel)
        if (!lstatSync(child).isSymbolicLink()) chownSync(child, UNPRIVILEGED.uid, UNPRIVILEGED.gid)
      }
    }
  }
}

/** Whether this process may mount a tmpfs (root in a permissive container); disk-full tests need it. */
export function canMountTmpfs(dir: string): boolean {
  const probe = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir], { stdio: 'ignore' })
  if (probe.status !== 0) return false
  spawnSync('umount', [dir], { stdio: 'ignore' })
  return true
}

export function mountTmpfs(dir: string, size: string): void {
  const result = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { encoding: 'utf8' })
  if (result.status !== 0) throw new Error(`mount failed: ${result.stderr}`)
}

export function unmount(dir: string): void {
  spawnSync('umount', ['-l', dir], { stdio: 'ignore' })
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Resolve once `predicate` holds (polled every few ms), or after `timeoutMs` with false. */
export async function waitFor(predicate: () => boolean, timeoutMs = 20_000, everyMs = 3): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (predicate()) return true
    await sleep(everyMs)
  }
  return predicate()
}
