// The commands that read rather than transform: `inspect` (message headers, no keys) and `report` (a bench
// result as an HTML page). Kept apart from cli.ts so that file stays a list of flags; each handler loads
// its code when it runs.
import { readFileSync, writeFileSync } from 'node:fs'
import type { Argv, CommandModule } from 'yargs'
import { describeError, EnvcryptError } from '../errors.js'

type SetExitCode = (code: number) => void

export function inspectCommand(setExitCode: SetExitCode): CommandModule<object, { files: string[]; json?: boolean; maxEncryptedDataKeys?: number }> {
  return {
    command: 'inspect <files..>',
    describe: 'print the header of encrypted files (algorithm, context, key providers) without keys or decrypting',
    builder: (y: Argv) =>
      // No default: the <files..> syntax already requires one (yargs would show an array's [default: []]).
      y.positional('files', { type: 'string', array: true, default: undefined, describe: 'encrypted files (- for stdin)' })
        .option('json', { type: 'boolean', describe: 'one JSON object per line per file: {"input": PATH, "header": <the metadata stream\'s header>}' })
        .option('max-encrypted-data-keys', { type: 'number', describe: 'refuse headers with more encrypted data keys' })
        .example('$0 inspect backup/db.dump.encrypted', 'algorithm, signed or not, frame length, context and key providers')
        .example('$0 inspect --json enc/*.encrypted | jq -r .header.algorithm | sort | uniq -c', 'count messages per algorithm suite')
        .example('$0 inspect --json enc/* | jq -r .header.message_id', 'message ids, as in the metadata stream') as never,
    handler: async (argv) => {
      const { inspectFile, inspectJsonLine, renderInspectTable } = await import('../message/inspect.js')
      let failed = 0
      let first = true
      for (const file of argv.files) {
        try {
          const result = await inspectFile(file, { maxEncryptedDataKeys: argv.maxEncryptedDataKeys })
          process.stdout.write(argv.json ? inspectJsonLine(result) + '\n' : `${first ? '' : '\n'}${renderInspectTable(result)}\n`)
          first = false
        } catch (err) {
          failed++
          process.stderr.write(`envcrypt: error: ${file}: ${describeError(err)}\n`)
        }
      }
      setExitCode(failed ? 1 : 0)
    },
  }
}

export function reportCommand(): CommandModule<object, { from: string; out: string }> {
  return {
    command: 'report',
    describe: 'turn a bench result (envcrypt bench --json) into a self-contained HTML page with charts',
    builder: (y: Argv) =>
      y.option('from', { type: 'string', demandOption: true, describe: 'bench JSON file (- for stdin)' })
        .option('out', { type: 'string', demandOption: true, describe: 'HTML file to write' })
        .example('$0 bench --json > bench.json && $0 report --from bench.json --out bench.html', 'charts of seconds, MB/s, KMS calls and data keys per run') as never,
    handler: async (argv) => {
      const { renderBenchReport } = await import('../bench/report.js')
      const text = readFileSync(argv.from === '-' ? 0 : argv.from, 'utf8')
      let bench: unknown
      try {
        bench = JSON.parse(text)
      } catch (err) {
        throw new EnvcryptError(`${argv.from}: not JSON (${describeError(err)}); make it with envcrypt bench --json`)
      }
      writeFileSync(argv.out, renderBenchReport(bench))
      process.stderr.write(`envcrypt: wrote ${argv.out}\n`)
    },
  }
}
