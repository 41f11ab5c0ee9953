// Runs s3rver in its own process: ListObjectsV2 continuation tokens use DES, which needs
// --openssl-legacy-provider (FACTS.md), and the parent's test stub servers stay responsive.
// Usage: node s3rver-child.mjs DIRECTORY BUCKET...; prints {"port": N} once listening; stops on SIGTERM.
import S3rver from 's3rver'

const [directory, ...buckets] = process.argv.slice(2)
const server = new S3rver({
  address: '127.0.0.1',
  port: 0,
  directory,
  silent: true,
  configureBuckets: buckets.map((name) => ({ name })),
})
const address = await server.run()
process.stdout.write(JSON.stringify({ port: address.port }) + '\n')
// Nothing to flush: exit at once rather than wait for clients' keep-alive connections.
process.on('SIGTERM', () => process.exit(0))
process.on('SIGINT', () => process.exit(0))
