// The client's download size: minified + gzip must stay under 13 KB (text
// fields, with their CRDT and binary layout, take about 3.5 KB of it).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { clientSize } from '../scripts/size.mjs'

test('the served minified build of client.js is under 13 KB gzipped', async () => {
  const s = clientSize()
  console.log(`# client.js: ${s.source} bytes source, ${s.minified} minified, ${s.gzip} minified+gzip`)
  assert.ok(s.gzip < 13 * 1024, `${s.gzip} bytes`)
})
