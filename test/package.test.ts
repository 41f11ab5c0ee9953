// The package as a user gets it: `npm pack`, install the tarball into an empty folder, run the bin, compile a
// TypeScript consumer against the declarations. Packs a staged copy (package.json, README, dist, lockfile) so
// the test never rebuilds dist/ under the other test files' feet.
import { beforeAll, describe, expect, it } from 'vitest'
import { execFileSync, spawnSync } from 'node:child_process'
import { cpSync, existsSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { ROOT, tempDir } from './helpers/cli.js'

const npm = (args: string[], cwd: string) => execFileSync('npm', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })

let tarball: string
let contents: string[]

beforeAll(() => {
  const stage = tempDir('envcrypt-pack-')
  for (const entry of ['package.json', 'package-lock.json', 'README.md', 'dist', 'scripts', 'binding.gyp', 'native']) cpSync(join(ROOT, entry), join(stage, entry), { recursive: true })
  // What `npm pack` runs as prepack in the repository.
  execFileSync(process.execPath, [join(stage, 'scripts', 'shrinkwrap.mjs'), 'write'], { cwd: stage })
  const out = tempDir('envcrypt-tgz-')
  npm(['pack', '--ignore-scripts', '--pack-destination', out], stage)
  tarball = join(out, readdirSync(out).find((f) => f.endsWith('.tgz'))!)
  contents = execFileSync('tar', ['tzf', tarball], { encoding: 'utf8' }).trim().split('\n')
}, 120_000)

describe('npm pack', () => {
  it('ships compiled JavaScript, type declarations, the README and a pinned dependency tree; no sources or tests', () => {
    expect(contents).toEqual(expect.arrayContaining(['package/package.json', 'package/README.md', 'package/npm-shrinkwrap.json', 'package/dist/cli.js', 'package/dist/index.js', 'package/dist/index.d.ts', 'package/dist/tree.d.ts']))
    expect(contents.filter((f) => /\/(src|test)\/|\.ts$/.test(f) && !f.endsWith('.d.ts'))).toEqual([])
  })

  it('ships the optional native kernel\'s sources and its never-failing build script, not a prebuilt binary', () => {
    expect(contents).toEqual(expect.arrayContaining(['package/binding.gyp', 'package/native/frames.cc', 'package/scripts/build-native.mjs']))
    expect(contents.filter((f) => f.includes('/build/') || f.endsWith('.node'))).toEqual([])
  })

  it('pins every dependency of the published package to the versions the tests ran against', () => {
    const stage = tempDir()
    execFileSync('tar', ['xzf', tarball, '-C', stage, 'package/npm-shrinkwrap.json', 'package/package.json'])
    const shrinkwrap = JSON.parse(readFileSync(join(stage, 'package', 'npm-shrinkwrap.json'), 'utf8'))
    const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8'))
    expect(shrinkwrap.packages).toEqual(lock.packages)
  })
})

describe('the install script when the native build fails', () => {
  it('exits 0 with a one-line note, and the package runs on the JavaScript engine', () => {
    const stage = tempDir('envcrypt-nobuild-')
    execFileSync('tar', ['xzf', tarball, '-C', stage])
    const pkg = join(stage, 'package')
    symlinkSync(join(ROOT, 'node_modules'), join(pkg, 'node_modules'))
    // A compiler that always fails stands in for a machine without one.
    const build = spawnSync(process.execPath, ['scripts/build-native.mjs'], { cwd: pkg, encoding: 'utf8', env: { ...process.env, CXX: 'false', CC: 'false' } })
    expect(build.status).toBe(0)
    expect(build.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^envcrypt: native frame kernel not built, using the JavaScript engine/)])
    expect(existsSync(join(pkg, 'build', 'Release', 'envcrypt_frames.node'))).toBe(false)
    const active = execFileSync(process.execPath, ['--input-type=module', '-e', "import('./dist/message/native.js').then((m) => console.log(m.nativeActive()))"], { cwd: pkg, encoding: 'utf8' })
    expect(active.trim()).toBe('false')
  }, 120_000)
})

describe('installing the tarball into an empty folder', () => {
  let project: string
  beforeAll(() => {
    project = tempDir('envcrypt-consumer-')
    writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }))
    // Offline from the npm cache that `npm ci` filled; the registry only if the cache lacks something.
    const offline = spawnSync('npm', ['install', '--offline', '--no-audit', '--no-fund', tarball], { cwd: project, encoding: 'utf8' })
    if (offline.status !== 0) npm(['install', '--no-audit', '--no-fund', tarball], project)
  }, 300_000)

  it('npx envcrypt --version and a tiny encrypt/decrypt work', () => {
    const npx = (args: string[]) => execFileSync('npx', ['--no-install', 'envcrypt', ...args], { cwd: project, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
    const version = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version
    expect(npx(['--version']).trim()).toBe(version)
    npx(['keygen', '--out', 'key.bin'])
    const secret = randomBytes(5000)
    writeFileSync(join(project, 'secret.bin'), secret)
    const key = ['-w', 'provider=raw-aes', 'key=k', 'material=file://key.bin']
    npx(['-e', '-i', 'secret.bin', '-o', 'secret.enc', ...key, '-S'])
    npx(['-d', '-i', 'secret.enc', '-o', 'secret.out', ...key, '-S'])
    expect(readFileSync(join(project, 'secret.out'))).toEqual(secret)
  })

  it('built the native frame kernel during the install wherever the repository built it', () => {
    const builtHere = existsSync(join(ROOT, 'build', 'Release', 'envcrypt_frames.node'))
    expect(existsSync(join(project, 'node_modules', 'envcrypt', 'build', 'Release', 'envcrypt_frames.node'))).toBe(builtHere)
  })

  it('a strict TypeScript consumer compiles against the declarations, catches a misspelt option, and runs', () => {
    writeFileSync(join(project, 'consumer.ts'), `
import { encryptTree, decryptTree, inspectFile, keygen, type EncryptTreeOptions, type TreeSummary } from 'envcrypt'
import { mkdirSync, writeFileSync } from 'node:fs'

mkdirSync('plain', { recursive: true })
writeFileSync('plain/a.txt', 'hello from the library\\n')
keygen('lib.key', 32)
const wrappingKeys = [['provider=raw-aes', 'key=lib', 'material=file://lib.key']]
const options: EncryptTreeOptions = { inputs: ['plain'], output: 'enc', recursive: true, wrappingKeys, encryptionContext: { app: 'consumer' } }
const encrypted: TreeSummary = await encryptTree(options)
// @ts-expect-error: a misspelt option is a compile error
export const misspelt = () => decryptTree({ inputs: ['enc'], output: 'dec', wrappingKeys, recursiv: true })
const decrypted = await decryptTree({ inputs: ['enc'], output: 'dec', recursive: true, suffix: '', wrappingKeys, requiredContext: { app: 'consumer' } })
const header = await inspectFile('enc/a.txt.encrypted')
const algorithm: string = header.header.algorithm
console.log(JSON.stringify({ encrypted: encrypted.files_ok, decrypted: decrypted.files_ok, algorithm, context: header.header.encryption_context.app }))
`)
    writeFileSync(join(project, 'tsconfig.json'), JSON.stringify({
      compilerOptions: { target: 'ES2022', module: 'nodenext', moduleResolution: 'nodenext', strict: true, skipLibCheck: false, types: ['node'], typeRoots: [join(ROOT, 'node_modules', '@types')] },
      files: ['consumer.ts'],
    }))
    const tsc = spawnSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { cwd: project, encoding: 'utf8' })
    expect(tsc.stdout + tsc.stderr).toBe('')
    expect(tsc.status).toBe(0)
    const run = execFileSync(process.execPath, ['consumer.js'], { cwd: project, encoding: 'utf8' })
    expect(JSON.parse(run)).toEqual({ encrypted: 1, decrypted: 1, algorithm: 'AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384', context: 'consumer' })
  })
})
