// Preloaded into the CLI (NODE_OPTIONS=--require) by tests that bound its memory: on exit, writes the process's
// peak resident set size in bytes (getrusage, so no sample can miss it) to $ENVCRYPT_TEST_MAX_RSS_FILE.
const { writeFileSync } = require('node:fs')
process.on('exit', () => {
  writeFileSync(process.env.ENVCRYPT_TEST_MAX_RSS_FILE, String(process.resourceUsage().maxRSS * 1024))
})
