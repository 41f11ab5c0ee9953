// Published installs get the exact dependency tree the tests ran against: `npm pack`/`npm publish` ship the
// lockfile as npm-shrinkwrap.json (the only lockfile npm honours inside a dependency). The repository keeps
// package-lock.json alone, so there is one lockfile to maintain; this copy lives only while packing.
import { copyFileSync, readFileSync, rmSync } from 'node:fs'

const [action] = process.argv.slice(2)
if (action === 'write') {
  const manifest = JSON.parse(readFileSync('package.json', 'utf8'))
  const lock = JSON.parse(readFileSync('package-lock.json', 'utf8'))
  const locked = lock.packages?.['']?.dependencies ?? {}
  // A lockfile out of step with package.json would pin the wrong tree: refuse to pack.
  for (const [name, range] of Object.entries(manifest.dependencies ?? {})) {
    if (locked[name] !== range) {
      console.error(`shrinkwrap: package-lock.json has ${name}@${locked[name] ?? 'nothing'}, package.json wants ${range}: run npm install first`)
      process.exit(1)
    }
  }
  copyFileSync('package-lock.json', 'npm-shrinkwrap.json')
} else if (action === 'remove') {
  rmSync('npm-shrinkwrap.json', { force: true })
} else {
  console.error('usage: node scripts/shrinkwrap.mjs write|remove')
  process.exit(2)
}
