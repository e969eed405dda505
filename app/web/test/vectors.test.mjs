// The client's applyOps against the vectors the server's merge.ApplyPlain
// passes (app/merge/testdata/apply_vectors.json): the same document and ops
// give the same data, or the same failure, on both sides.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { applyOps, getPath } from '../client.js'

const file = new URL('../../merge/testdata/apply_vectors.json', import.meta.url)
const { vectors } = JSON.parse(readFileSync(file, 'utf8'))

test('the shared vectors cover every op kind', () => {
  const kinds = new Set(vectors.flatMap(v => v.ops.map(o => o.op)))
  for (const k of ['set', 'unset', 'inc', 'add', 'remove', 'resolve']) assert.ok(kinds.has(k), k)
})

for (const v of vectors) {
  test(`vector: ${v.name}`, () => {
    const data = v.doc
    const before = JSON.stringify(data)
    if (v.error) {
      assert.throws(() => applyOps(data, v.ops), e => e.code === v.error)
      assert.equal(JSON.stringify(data), before, 'a failed apply leaves the data as it was')
    } else {
      applyOps(data, v.ops)
      assert.deepEqual(data, v.want)
      // Same fields and the same order of set elements on the wire.
      assert.equal(JSON.stringify(data, sortedKeys), JSON.stringify(v.want, sortedKeys))
    }
    assert.equal(Object.getPrototypeOf(data), Object.prototype)
    assert.equal(({}).polluted, undefined, 'Object.prototype is untouched')
    assert.equal(typeof ({}).toString, 'function')
  })
}

test('getPath reads own fields only', () => {
  const d = JSON.parse('{"a":{"__proto__":{"x":1}},"toString":2}')
  assert.equal(getPath(d, 'a.__proto__.x'), 1)
  assert.equal(getPath(d, 'toString'), 2)
  assert.equal(getPath({}, 'constructor'), undefined)
  assert.equal(getPath({}, 'valueOf.name'), undefined)
  assert.equal(getPath({ a: {} }, 'a.hasOwnProperty'), undefined)
})

function sortedKeys (k, v) {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return v
  const out = {}
  for (const key of Object.keys(v).sort()) Object.defineProperty(out, key, { value: v[key], enumerable: true })
  return out
}
