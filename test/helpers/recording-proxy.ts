// A forwarding HTTP proxy in front of an S3 endpoint that records every request's method, URL and headers
// (s3rver ignores SSE headers, so tests check the wire), and can inject faults: 503 SlowDown answers and
// GetObject bodies cut mid-way.
import http, { type IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface RecordedRequest {
  method: string
  url: string
  headers: IncomingHttpHeaders
}

export interface RecordingProxy {
  endpoint: string
  requests: RecordedRequest[]
  faults: {
    /** Fraction of requests answered 503 SlowDown without reaching the server. */
    throttleRate: number
    /** This many GetObject responses larger than 1 MiB are cut after half their body. */
    cutBodies: number
    /** Writes that carry If-None-Match (PutObject, CompleteMultipartUpload) are answered 412, as S3 does when
     *  the object exists (s3rver ignores the header on writes). */
    objectExists: boolean
    injected: number
  }
  close(): Promise<void>
}

const SLOW_DOWN = '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>'

const PRECONDITION_FAILED = '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message><Condition>If-None-Match</Condition></Error>'

export async function startRecordingProxy(target: string): Promise<RecordingProxy> {
  const requests: RecordedRequest[] = []
  const faults = { throttleRate: 0, cutBodies: 0, objectExists: false, injected: 0 }
  const server = http.createServer((req, res) => {
    requests.push({ method: req.method!, url: req.url!, headers: req.headers })
    if (faults.throttleRate > 0 && Math.random() < faults.throttleRate) {
      faults.injected++
      req.resume()
      req.on('end', () => {
        res.writeHead(503, { 'content-type': 'application/xml' })
        res.end(SLOW_DOWN)
      })
      return
    }
    if (faults.objectExists && req.headers['if-none-match'] && (req.method === 'PUT' || req.method === 'POST')) {
      faults.injected++
      req.resume()
      req.on('end', () => {
        res.writeHead(412, { 'content-type': 'application/xml' })
        res.end(PRECONDITION_FAILED)
      })
      return
    }
    // `expect` is never signed; dropping it lets the body flow straight through.
    const { expect: _expect, ...headers } = req.headers
    const upstream = http.request(target + req.url, { method: req.method, headers }, (answer) => {
      res.writeHead(answer.statusCode!, answer.headers)
      const length = Number(answer.headers['content-length'] ?? 0)
      if (req.method === 'GET' && answer.statusCode === 200 && faults.cutBodies > 0 && length > 1024 * 1024) {
        faults.cutBodies--
        faults.injected++
        let sent = 0
        answer.on('data', (chunk: Buffer) => {
          if (sent >= length / 2) {
            answer.destroy()
            res.destroy()
            return
          }
          sent += chunk.length
          res.write(chunk)
        })
        return
      }
      answer.pipe(res)
    })
    upstream.on('error', () => res.destroy())
    req.pipe(upstream)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    endpoint: `http://127.0.0.1:${port}`,
    requests,
    faults,
    close: () => {
      server.closeAllConnections()
      return new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}
