// Text fields in the client: the same CRDT as the server's, checked against
// the vectors app/merge generates (app/merge/testdata/text_vectors.json).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { applyOps, Text, insertOp, deleteOp } from '../client.js'

const vectors = JSON.parse(readFileSync(new URL('../../merge/testdata/text_vectors.json', import.meta.url)))

test('the vectors cover effective ops and clients\' own ops', () => {
  const names = vectors.cases.map(c => c.name)
  assert.ok(names.some(n => n.endsWith('/effective')) && names.some(n => n.endsWith('/client_ops')), names.join())
})

for (const c of vectors.cases) {
  test(`vector ${c.name}: every step leaves the server's data`, () => {
    const data = {}
    c.steps.forEach((st, i) => {
      applyOps(data, st.ops)
      assert.deepEqual(JSON.parse(JSON.stringify(data)), st.want, `step ${i}`)
    })
  })
}

test('concurrent words at one position stay whole, in the same order everywhere', () => {
  const base = {}
  applyOps(base, [{ op: 'ins', path: 'n', value: ['z', 1, '', '[]'] }])
  const type = (data, site, pos, word) => {
    const ops = []
    for (const ch of word) {
      const op = insertOp(data, 'n', site, pos++, ch)
      applyOps(data, [op])
      ops.push(op)
    }
    return ops
  }
  const a = structuredClone(base); const b = structuredClone(base)
  const fromA = type(a, 'ann', 1, 'hello')
  const fromB = type(b, 'bob', 1, 'world')
  applyOps(a, fromB)
  applyOps(b, fromA)
  assert.equal(a.n, '[worldhello]')
  assert.equal(b.n, a.n)
  // Site numbering follows arrival order; the ids in text order agree.
  const ids = d => { const t = Text.of(d, 'n'); return [...Array(t.length).keys()].map(i => t.idAt(i)) }
  assert.deepEqual(ids(a), ids(b))
})

test('deleteOp and positions count code points', () => {
  const d = {}
  applyOps(d, [insertOp(d, 't', 's', 0, 'a😀b日c')])
  const del = deleteOp(d, 't', 1, 3)
  assert.deepEqual(del, { op: 'del', path: 't', value: ['s', 2, 3] })
  applyOps(d, [del])
  assert.equal(d.t, 'ac')
  assert.equal(deleteOp(d, 't', 5, 1), null)
  const t = Text.of(d, 't')
  assert.equal(t.length, 2)
  assert.deepEqual(t.idAt(1), { site: 's', clock: 5 })
  assert.equal(t.caret({ site: 's', clock: 3 }), 1) // deleted: before the next visible character
  assert.equal(t.caret({ site: 's', clock: 5 }), 2)
  assert.equal(t.caret(null), 0)
  assert.equal(t.caret({ site: 'nobody', clock: 1 }), -1)
})

test('doc.text: offline typing merges with remote typing, events carry positions, ops carry anchors', async () => {
  const { harness } = await import('../testkit.mjs')
  const h = harness()
  await h.sync.ready
  h.last().welcome()
  const d = h.sync.doc('forms/t')
  // The server's copy: "ab" typed by "srv".
  const start = {}
  applyOps(start, [{ op: 'ins', path: 'notes', value: ['srv', 1, '', 'ab'] }])
  h.last().h.msg({ t: 'snap', doc: 'forms/t', v: 1, data: start })
  h.last().h.msg({ t: 'synced', doc: 'forms/t', v: 1 })
  const notes = d.text('notes')
  const events = []
  notes.on('change', e => events.push(e))
  h.sync.setOffline(true)
  notes.insert(1, 'X') // between a and b
  notes.insert(2, 'Y')
  notes.delete(0) // a
  assert.equal(notes.value, 'XYb')
  assert.deepEqual(events.map(e => [e.index, e.deleted, e.inserted, e.remote]), [[1, 0, 'X', false], [2, 0, 'Y', false], [0, 1, '', false]])
  h.sync.setOffline(false)
  h.last().welcome()
  const sent = h.last().sent.filter(m => m.t === 'op').map(m => m.ops[0])
  assert.deepEqual(sent.map(o => [o.op, o.value]), [
    ['ins', ['me', 3, 'srv@1', 'X']],
    ['ins', ['me', 4, 3, 'Y']],
    ['del', ['srv', 1, 1]]
  ])
  // Meanwhile another client typed after "a" too; its delta arrives before
  // the acks: both texts show, each in one piece (equal clocks: the greater
  // site first, as on the server).
  h.last().h.msg({ t: 'delta', doc: 'forms/t', v: 2, pv: 1, by: 'other', op: 1, ops: [{ op: 'ins', path: 'notes', value: ['other', 3, 'srv@1', '12'] }] })
  assert.equal(notes.value, '12XYb')
  assert.deepEqual(events.at(-1), { index: 0, deleted: 0, inserted: '12', value: '12XYb', remote: true })
})
