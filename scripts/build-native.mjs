#!/usr/bin/env node
// Build the optional native frame kernel (native/frames.cc -> build/Release/envcrypt_frames.node).
// Runs as the package's `install` script. It must never fail an install: without the kernel envcrypt uses
// its JavaScript frame loop (same output, slower), so on any failure this prints one line and exits 0.
//   ENVCRYPT_NATIVE=0  skip the build entirely.
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const note = (message) => process.stderr.write(`envcrypt: ${message}\n`)

function nodeGypCommand() {
  // npm tells its scripts where its own node-gyp is; otherwise try npm's bundled copy next to this node.
  const candidates = [
    process.env.npm_config_node_gyp,
    join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ]
  const script = candidates.find((path) => path && existsSync(path))
  return script ? [process.execPath, [script]] : ['node-gyp', []]
}

function main() {
  if (process.env.ENVCRYPT_NATIVE === '0') {
    note('ENVCRYPT_NATIVE=0: native frame kernel not built (the JavaScript engine will be used)')
    return
  }
  if (!existsSync(join(root, 'binding.gyp')) || !existsSync(join(root, 'native', 'frames.cc'))) {
    note('native sources missing: native frame kernel not built (the JavaScript engine will be used)')
    return
  }
  const [command, prefix] = nodeGypCommand()
  const args = [...prefix, 'rebuild']
  // Offline builds: when npm has no nodedir setting, use the headers installed with this very node binary
  // (they include OpenSSL's) instead of letting node-gyp download them.
  const localHeaders = join(dirname(process.execPath), '..', 'include', 'node')
  if (!process.env.npm_config_nodedir && existsSync(join(localHeaders, 'node_api.h')) && existsSync(join(localHeaders, 'common.gypi'))) {
    args.push(`--nodedir=${join(dirname(process.execPath), '..')}`)
  }
  const result = spawnSync(command, args, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 300_000 })
  if (result.status === 0) {
    note('native frame kernel built')
    return
  }
  const reason = result.error?.message ?? (result.stderr || result.stdout || '').trim().split('\n').filter((l) => /error/i.test(l))[0] ?? `exit ${result.status}`
  note(`native frame kernel not built, using the JavaScript engine (${reason.trim().slice(0, 200)})`)
}

try {
  main()
} catch (err) {
  note(`native frame kernel not built, using the JavaScript engine (${err instanceof Error ? err.message : String(err)})`)
}
process.exit(0)
