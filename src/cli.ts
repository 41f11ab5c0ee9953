#!/usr/bin/env node
// The envcrypt command: parses argv and runs a subcommand (all of it in cli/). A lone `--version` is answered
// here, before the flag parser and its modules load: for that command they would be nearly all of its time.
import { VERSION } from './version.js'

if (process.argv.length === 3 && process.argv[2] === '--version') process.stdout.write(VERSION + '\n')
else await import('./cli/main.js')
