// The TypeScript declarations (client.d.ts) against the code: every runtime
// export is declared and every declared value exists, and a program using
// the API (test/types/usage.ts) type-checks with the pinned compiler.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import * as client from '../client.js'

const here = p => fileURLToPath(new URL(p, import.meta.url))

test('every export of client.js is declared in client.d.ts, and nothing else is', () => {
  const dts = readFileSync(here('../client.d.ts'), 'utf8')
  const declared = [...dts.matchAll(/^export declare (?:function|class|const) (\w+)/gm)].map(m => m[1])
  if (/^export default/m.test(dts)) declared.push('default')
  assert.deepEqual([...new Set(declared)].sort(), Object.keys(client).sort())
})

test('tsc --noEmit accepts test/types/usage.ts (generic Doc<T>, change objects, sync.docs)', () => {
  try {
    execFileSync(process.execPath, [here('../node_modules/typescript/bin/tsc'), '-p', here('types/tsconfig.json')], { encoding: 'utf8' })
  } catch (e) {
    assert.fail(`tsc failed:\n${e.stdout}${e.stderr}`)
  }
})
