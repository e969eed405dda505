// The client's download size: the served minified build + gzip must stay
// under 16 KB (text fields take about 3.5 KB of it, tab coordination 1 KB,
// live queries 0.9 KB).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { clientSize } from '../scripts/size.mjs'

test('the served minified build of client.js is under 16 KB gzipped', async () => {
  const s = clientSize()
  console.log(`# client.js: ${s.source} bytes source, ${s.minified} minified, ${s.gzip} minified+gzip`)
  assert.ok(s.gzip < 16 * 1024, `${s.gzip} bytes`)
})
