#!/usr/bin/env node
// Keeps the suite honest: `node scripts/check-tests.mjs [DIR]` (default test/) fails on
//   - a skipped or focused test (`it.skip`, `test.skip`, `describe.skip`, `.only`, `.todo`);
//   - a `skipIf`/`runIf` whose test name (or an enclosing describe's name) does not carry the reason, i.e. the
//     word "skip" in its text or in the initializer of a variable the name interpolates;
//   - a test body with no assertion: no call to `expect`, nor to a helper whose name starts with `assert` or
//     `expect` (fast-check's `fc.assert` counts).
// It parses the TypeScript with oxc-parser (a real parser, so strings and comments never fool it).
import { readFileSync, readdirSync } from 'node:fs'
import { join, relative } from 'node:path'
import { parseSync } from 'oxc-parser'

const TEST_FILE = /\.test\.[cm]?[jt]s$/
const TEST_FUNCTIONS = new Set(['it', 'test'])
const SUITE_FUNCTIONS = new Set(['describe', 'suite'])
const FORBIDDEN_MODIFIERS = new Set(['skip', 'only', 'todo'])
const CONDITIONAL_MODIFIERS = new Set(['skipIf', 'runIf'])
const ASSERTION_NAME = /^(expect|assert)/i

/** Every node below `node` (depth first), with its parent chain available through `visit`'s second argument. */
function walk(node, visit, ancestors = []) {
  if (!node || typeof node !== 'object') return
  if (Array.isArray(node)) {
    for (const child of node) walk(child, visit, ancestors)
    return
  }
  if (typeof node.type !== 'string') return
  visit(node, ancestors)
  const next = [...ancestors, node]
  for (const [key, value] of Object.entries(node)) {
    if (key !== 'parent' && value && typeof value === 'object') walk(value, visit, next)
  }
}

/** For `it(...)`, `it.skipIf(c)(...)`, `describe.each(t)(...)`: the root name and the modifiers used. */
function describeCallee(callee) {
  const modifiers = []
  let node = callee
  for (;;) {
    if (node.type === 'MemberExpression' && !node.computed) {
      modifiers.unshift(node.property.name)
      node = node.object
    } else if (node.type === 'CallExpression') {
      node = node.callee
    } else break
  }
  return node.type === 'Identifier' ? { root: node.name, modifiers } : undefined
}

function variableInitializers(program, source) {
  const inits = new Map()
  walk(program, (node) => {
    if (node.type === 'VariableDeclarator' && node.id.type === 'Identifier' && node.init) {
      inits.set(node.id.name, node.init)
    }
  })
  return inits
}

/** What a title expression can show: its source text plus, one level deep, that of the variables it uses; and
 *  the identifiers of both. */
function titleParts(title, source, inits) {
  if (!title) return { text: '', identifiers: new Set() }
  let text = source.slice(title.start, title.end)
  const identifiers = new Set()
  walk(title, (node) => {
    if (node.type !== 'Identifier') return
    identifiers.add(node.name)
    const init = inits.get(node.name)
    if (!init) return
    text += ' ' + source.slice(init.start, init.end)
    walk(init, (inner) => inner.type === 'Identifier' && identifiers.add(inner.name))
  })
  return { text, identifiers }
}

/** A name carries the reason for a condition when its text says "skip" and it is built from the condition's own
 *  variables or calls (so the reason an enclosing describe gives for another condition does not count). */
function carriesReason(name, condition, source, inits) {
  const { text, identifiers } = titleParts(name, source, inits)
  if (!/skip/i.test(text)) return false
  const used = []
  walk(condition, (node) => node.type === 'Identifier' && used.push(node.name))
  return used.length === 0 || used.some((identifier) => identifiers.has(identifier))
}

function hasAssertion(fn) {
  let found = false
  walk(fn.body, (node) => {
    if (found || node.type !== 'CallExpression') return
    const callee = node.callee
    const name = callee.type === 'Identifier' ? callee.name : callee.type === 'MemberExpression' && !callee.computed ? callee.property.name : ''
    if (ASSERTION_NAME.test(name)) found = true
  })
  return found
}

function lineOf(source, offset) {
  return source.slice(0, offset).split('\n').length
}

export function checkSource(path, source) {
  const problems = []
  const { program, errors } = parseSync(path, source)
  if (errors.length > 0) return [`${path}: cannot parse: ${errors[0].message}`]
  const inits = variableInitializers(program, source)
  const functions = new Map()
  walk(program, (node) => {
    if (node.type === 'FunctionDeclaration' && node.id) functions.set(node.id.name, node)
  })
  walk(program, (node, ancestors) => {
    if (node.type !== 'CallExpression') return
    const shape = describeCallee(node.callee)
    if (!shape || !(TEST_FUNCTIONS.has(shape.root) || SUITE_FUNCTIONS.has(shape.root))) return
    if (node.callee.type === 'MemberExpression') {
      const modifier = node.callee.property.name
      if (FORBIDDEN_MODIFIERS.has(modifier)) {
        problems.push(`${path}:${lineOf(source, node.start)}: ${shape.root}.${modifier} is not allowed; fix the test, or use skipIf with the reason in its name`)
        return
      }
      // it.skipIf(c) and it.each(table) return the function that the outer call, visited separately, calls.
      if (CONDITIONAL_MODIFIERS.has(modifier) || modifier === 'each' || modifier === 'for') return
    }
    const [title, ...rest] = node.arguments
    const where = `${path}:${lineOf(source, node.start)}`
    if (shape.modifiers.some((m) => CONDITIONAL_MODIFIERS.has(m))) {
      const condition = node.callee.arguments[0]
      const enclosing = ancestors
        .filter((a) => a.type === 'CallExpression' && SUITE_FUNCTIONS.has(describeCallee(a.callee)?.root ?? ''))
        .map((a) => a.arguments[0])
      if (![title, ...enclosing].some((name) => carriesReason(name, condition, source, inits))) {
        problems.push(`${where}: ${shape.modifiers.join('.')} without the reason in the test's name (say "(skipped: why)", built from the same condition)`)
      }
    }
    if (!TEST_FUNCTIONS.has(shape.root)) return
    let fn = rest.find((a) => a.type === 'ArrowFunctionExpression' || a.type === 'FunctionExpression' || a.type === 'Identifier')
    if (fn?.type === 'Identifier') fn = functions.get(fn.name)
    if (!fn) {
      problems.push(`${where}: a test without a body`)
      return
    }
    if (!hasAssertion(fn)) problems.push(`${where}: the test body asserts nothing (no expect(...) and no assert*/expect* helper)`)
  })
  return problems
}

function testFiles(dir) {
  return readdirSync(dir, { recursive: true })
    .map(String)
    .filter((rel) => TEST_FILE.test(rel) && !rel.split('/').includes('node_modules'))
    .sort()
    .map((rel) => join(dir, rel))
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const dir = process.argv[2] ?? 'test'
  const files = testFiles(dir)
  const problems = files.flatMap((file) => checkSource(relative(process.cwd(), file), readFileSync(file, 'utf8')))
  for (const problem of problems) console.error(problem)
  if (problems.length > 0) {
    console.error(`check-tests: ${problems.length} problem(s) in ${dir}`)
    process.exit(1)
  }
  console.log(`check-tests: ${files.length} test files, no skipped test without its reason, every test asserts`)
}
