// The client's download size: minified + gzip must stay under 12 KB.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { clientSize } from '../scripts/size.mjs'

test('client.js minified + gzip is under 12 KB', async () => {
  const s = await clientSize()
  console.log(`# client.js: ${s.source} bytes source, ${s.minified} minified, ${s.gzip} minified+gzip`)
  assert.ok(s.gzip < 12 * 1024, `${s.gzip} bytes`)
})
