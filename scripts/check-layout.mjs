#!/usr/bin/env node
// Keeps the layout honest: `node scripts/check-layout.mjs [DIR]` (default src/) parses every .ts file and
//   - lists every function over 80 lines (declarations, methods, arrows, callbacks and object-literal handlers,
//     each counted on its own, from its first to its last line) and fails on any over 120;
//   - fails when more than 8 files sit directly in DIR (the rest belong in folders by concern);
//   - fails on any import cycle, counting type-only imports, `export ... from`, `import('...')` types and
//     dynamic import(), since a reader goes back and forth along each of them.
// It parses with oxc-parser (a real TypeScript parser; the compiler of TypeScript 7 has no JavaScript API).
import { existsSync, readFileSync, readdirSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { parseSync } from 'oxc-parser'

const LISTED_LINES = 80
const MAX_LINES = 120
const MAX_TOP_FILES = 8
const FUNCTION_TYPES = new Set(['FunctionDeclaration', 'FunctionExpression', 'ArrowFunctionExpression'])

/** Every .ts file under `dir` (declaration files aside), sorted. */
function sourceFiles(dir) {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile() && entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts'))
    .map((entry) => join(entry.parentPath, entry.name))
    .sort()
}

/** Depth-first walk calling `visit(node, parent)` for every AST node. */
function walk(node, visit, parent = undefined) {
  if (!node || typeof node !== 'object') return
  if (Array.isArray(node)) {
    for (const child of node) walk(child, visit, parent)
    return
  }
  if (typeof node.type !== 'string') return
  visit(node, parent)
  for (const [key, value] of Object.entries(node)) {
    if (key !== 'parent' && value && typeof value === 'object') walk(value, visit, node)
  }
}

function lineIndex(source) {
  const starts = [0]
  for (let i = source.indexOf('\n'); i !== -1; i = source.indexOf('\n', i + 1)) starts.push(i + 1)
  return (offset) => {
    let low = 0
    let high = starts.length - 1
    while (low < high) {
      const middle = (low + high + 1) >> 1
      if (starts[middle] <= offset) low = middle
      else high = middle - 1
    }
    return low + 1
  }
}

function keyName(key) {
  if (!key) return undefined
  if (key.type === 'Identifier' || key.type === 'PrivateIdentifier') return key.name
  if (key.type === 'Literal') return String(key.value)
  return undefined
}

/** A readable name for a function node, from where it sits. */
function functionName(node, parent) {
  if (node.id?.name) return node.id.name
  if (!parent) return '(anonymous)'
  switch (parent.type) {
    case 'VariableDeclarator':
      return keyName(parent.id) ?? '(anonymous)'
    case 'MethodDefinition':
    case 'Property':
    case 'PropertyDefinition':
      return keyName(parent.key) ?? '(computed)'
    case 'CallExpression':
    case 'NewExpression': {
      const callee = parent.callee
      const name = callee.type === 'MemberExpression' ? keyName(callee.property) : keyName(callee)
      return `(callback of ${name ?? 'a call'})`
    }
    default:
      return '(anonymous)'
  }
}

/** The file a relative specifier names, or undefined for packages and node: builtins. */
function resolveSpecifier(fromFile, specifier) {
  if (!specifier.startsWith('.')) return undefined
  const base = resolve(dirname(fromFile), specifier)
  const candidates = [base.replace(/\.js$/, '.ts'), base.replace(/\.mjs$/, '.mts'), base + '.ts', join(base, 'index.ts'), base]
  return candidates.find((candidate) => existsSync(candidate) && candidate.endsWith('.ts'))
}

/** Specifiers `node` makes its file depend on: imports of any kind, re-exports, import() and import('x') types. */
function dependencySpecifier(node) {
  switch (node.type) {
    case 'ImportDeclaration':
    case 'ExportAllDeclaration':
      return node.source.value
    case 'ExportNamedDeclaration':
      return node.source?.value
    case 'ImportExpression':
      return node.source.type === 'Literal' && typeof node.source.value === 'string' ? node.source.value : undefined
    case 'TSImportType': {
      // oxc puts the specifier in `source`; other ESTree-TS parsers in `argument` (a literal type).
      const literal = node.source ?? (node.argument?.type === 'TSLiteralType' ? node.argument.literal : node.argument)
      return typeof literal?.value === 'string' ? literal.value : undefined
    }
    default:
      return undefined
  }
}

function analyse(file) {
  const source = readFileSync(file, 'utf8')
  const { program, errors } = parseSync(file, source, { lang: 'ts', sourceType: 'module' })
  if (errors.length > 0) throw new Error(`${file}: ${errors[0].message}`)
  const lineOf = lineIndex(source)
  const functions = []
  const dependencies = new Set()
  walk(program, (node, parent) => {
    if (FUNCTION_TYPES.has(node.type)) {
      const line = lineOf(node.start)
      functions.push({ name: functionName(node, parent), line, lines: lineOf(node.end) - line + 1 })
    }
    const specifier = dependencySpecifier(node)
    const target = specifier && resolveSpecifier(file, specifier)
    if (target) dependencies.add(target)
  })
  return { functions, dependencies }
}

/** Strongly connected components of more than one file, or a file importing itself (Tarjan). */
function cycles(graph) {
  let counter = 0
  const index = new Map()
  const low = new Map()
  const stack = []
  const onStack = new Set()
  const found = []
  const visit = (file) => {
    index.set(file, counter)
    low.set(file, counter)
    counter += 1
    stack.push(file)
    onStack.add(file)
    for (const next of graph.get(file) ?? []) {
      if (!index.has(next)) {
        visit(next)
        low.set(file, Math.min(low.get(file), low.get(next)))
      } else if (onStack.has(next)) {
        low.set(file, Math.min(low.get(file), index.get(next)))
      }
    }
    if (low.get(file) !== index.get(file)) return
    const component = []
    let member
    do {
      member = stack.pop()
      onStack.delete(member)
      component.push(member)
    } while (member !== file)
    if (component.length > 1 || graph.get(file)?.has(file)) found.push(component.sort())
  }
  for (const file of graph.keys()) if (!index.has(file)) visit(file)
  return found
}

function main() {
  const root = resolve(process.argv[2] ?? 'src')
  const show = (file) => relative(process.cwd(), file)
  const failures = []
  const graph = new Map()
  const long = []
  for (const file of sourceFiles(root)) {
    const { functions, dependencies } = analyse(file)
    graph.set(file, dependencies)
    for (const fn of functions) if (fn.lines > LISTED_LINES) long.push({ file, ...fn })
  }
  long.sort((a, b) => b.lines - a.lines)
  for (const fn of long) {
    const verdict = fn.lines > MAX_LINES ? `FAIL (over ${MAX_LINES})` : `over ${LISTED_LINES}`
    console.log(`${show(fn.file)}:${fn.line} ${fn.name}: ${fn.lines} lines, ${verdict}`)
    if (fn.lines > MAX_LINES) failures.push(`${show(fn.file)}:${fn.line} ${fn.name} is ${fn.lines} lines (max ${MAX_LINES})`)
  }
  const topFiles = readdirSync(root, { withFileTypes: true }).filter((entry) => entry.isFile())
  if (topFiles.length > MAX_TOP_FILES) {
    failures.push(`${show(root)}/ holds ${topFiles.length} files directly (max ${MAX_TOP_FILES}): ${topFiles.map((e) => e.name).join(', ')}`)
  }
  for (const component of cycles(graph)) failures.push(`import cycle: ${component.map(show).join(' <-> ')}`)
  console.log(`${graph.size} files, ${long.length} functions over ${LISTED_LINES} lines, ${topFiles.length} files directly in ${show(root)}/`)
  for (const failure of failures) console.error(`check-layout: ${failure}`)
  if (failures.length > 0) process.exitCode = 1
}

main()
