#!/usr/bin/env node
// The envcrypt command: parses argv and runs a subcommand (all of it in cli/).
import './cli/main.js'
