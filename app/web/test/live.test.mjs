// The client against a real replica (app + daprd). AUTOGLM_URL names it;
// `make test-js` starts one (app/web/webtest_test.go). Without a server
// these tests fail.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { isDeepStrictEqual } from 'node:util'
import WebSocket from 'ws'
import { connect, memoryStorage, decodeFrames, decodeJSON } from '../client.js'

const URL = process.env.AUTOGLM_URL
const uid = () => Math.random().toString(36).slice(2, 10)

test('a server is given in AUTOGLM_URL', () => {
  assert.ok(URL, 'AUTOGLM_URL must name a running server; `make test-js` starts one')
})

/** A WebSocket that records every message it receives, decoded. */
function recordingSocket (log) {
  return class extends WebSocket {
    constructor (...args) {
      super(...args)
      this.on('message', (data, isBinary) => {
        for (const m of isBinary ? decodeFrames(new Uint8Array(data)) : [decodeJSON(data)]) log.push({ m, bytes: data.byteLength, binary: isBinary })
      })
    }
  }
}

function client (t, opts = {}) {
  const sync = connect(URL, { WebSocket, storage: memoryStorage(), clientId: 'js-' + uid(), roles: ['editor'], backoff: { base: 50, max: 500 }, ...opts })
  t.after(() => sync.close())
  return sync
}

async function until (what, fn, ms = 5000) {
  const end = Date.now() + ms
  for (;;) {
    const v = await fn()
    if (v) return v
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

async function rest (method, path, body, headers = {}) {
  const res = await fetch(URL + path, { method, headers: { 'content-type': 'application/json', ...headers }, body: body && JSON.stringify(body) })
  return { status: res.status, body: await res.json().catch(() => null) }
}

const settled = d => d.synced && d.pending.length === 0

for (const binary of [false, true]) {
  test(`two clients sync over WebSocket (${binary ? 'binary' : 'JSON'} frames)`, async t => {
    const log = []
    const doc = 'forms/ws-' + uid()
    const a = client(t, { binary })
    const b = client(t, { binary, WebSocket: recordingSocket(log) })
    const da = a.doc(doc); const db = b.doc(doc)
    await Promise.all([da.ready, db.ready])
    assert.equal(a.transport, binary ? 'ws+bin' : 'ws')
    da.set('title', 'Hello')
    await until('B sees the title', () => db.state.title === 'Hello')
    db.update([{ op: 'inc', path: 'responses', value: 2 }, { op: 'add', path: 'tags', value: 'x' }])
    await until('A sees B\'s edit', () => da.state.responses === 2)
    await until('both settle', () => settled(da) && settled(db) && da.version === db.version)
    assert.deepEqual(da.state, db.state)
    assert.deepEqual((await rest('GET', '/v1/docs/' + doc)).body.data, da.state)
    const delta = log.find(e => e.m.t === 'delta' && e.m.ops?.[0]?.path === 'title')
    assert.equal(delta.binary, binary)
    console.log(`# wire size of the single-field set delta (${binary ? 'binary' : 'JSON'}): ${delta.bytes} bytes`)
    if (binary) assert.ok(delta.bytes <= 120, `${delta.bytes} bytes`)
  })
}

for (const transport of ['sse', 'longpoll']) {
  test(`a ${transport} client syncs with a WebSocket client`, async t => {
    const doc = 'forms/' + transport + '-' + uid()
    const ws = client(t)
    const fb = client(t, { transport, WebSocket: undefined, pingInterval: 200 })
    const dw = ws.doc(doc); const df = fb.doc(doc)
    await Promise.all([dw.ready, df.ready])
    assert.equal(fb.transport, transport)
    dw.set('title', 'from ws')
    await until(`${transport} sees it`, () => df.state.title === 'from ws')
    df.set('notes', 'from ' + transport)
    df.increment('responses')
    await until('ws sees it', () => dw.state.notes === 'from ' + transport && dw.state.responses === 1)
    await until('acks', () => settled(df) && df.version === dw.version)
    assert.deepEqual(df.state, dw.state)
    await until('a ping round trip over the fallback', () => fb.rtt !== null)
  })
}

// An ack whose effective ops are empty ("your edit lost") carries the empty
// list in both encodings, so the losing client drops its own value.
for (const binary of [true, false]) test(`offline edits replay on reconnect and merge per the collection policy (forms: crdt, ${binary ? 'binary' : 'JSON'} frames)`, async t => {
  const doc = 'forms/offline-' + uid()
  const a = client(t, { binary }); const b = client(t, { binary })
  const da = a.doc(doc); const db = b.doc(doc)
  await Promise.all([da.ready, db.ready])
  da.set('title', 'start')
  await until('B has the start', () => db.state.title === 'start')

  a.setOffline(true)
  da.set('title', 'A offline')
  da.add('tags', 'urgent')
  da.increment('responses'); da.increment('responses')
  da.set('notes', 'only A')
  assert.equal(da.pending.length, 5)
  await new Promise(resolve => setTimeout(resolve, 20)) // B's title edit is later
  db.set('title', 'B online')
  db.add('tags', 'customer')
  db.increment('responses')
  await until('B settles', () => settled(db))

  a.setOffline(false)
  await until('A replays and both converge', () => settled(da) && da.version === db.version && settled(db))
  const server = (await rest('GET', '/v1/docs/' + doc)).body.data
  assert.deepEqual(da.state, server)
  assert.deepEqual(db.state, server)
  assert.equal(server.title, 'B online', 'per-field last writer (by HLC) wins')
  assert.equal(server.notes, 'only A', 'edits of other fields survive')
  assert.deepEqual(server.tags, ['customer', 'urgent'], 'sets merge (add wins)')
  assert.equal(server.responses, 3, 'counters add up')
})

test('ops replayed with their original ids are answered dup:true and applied once', async t => {
  const doc = 'forms/dup-' + uid()
  const clientId = 'js-dup-' + uid()
  const storage = memoryStorage()
  const a = client(t, { clientId, storage })
  const da = a.doc(doc)
  await da.ready
  const op = da.increment('responses')
  await until('acked', () => settled(da))
  a.close()

  // The same client after a "reload" that lost the ack: its queue still
  // holds the op.
  await storage.put('op:' + op.op, { ...op, sent: true })
  const log = []
  const b = client(t, { clientId, storage, binary: false, WebSocket: recordingSocket(log) })
  const db = b.doc(doc)
  await until('the replay is answered', () => log.some(e => e.m.t === 'ack' && e.m.op === op.op))
  const ack = log.find(e => e.m.t === 'ack' && e.m.op === op.op).m
  assert.equal(ack.dup, true)
  await until('settled', () => settled(db))
  assert.equal(db.state.responses, 1)
  assert.equal((await rest('GET', '/v1/docs/' + doc)).body.data.responses, 1)
})

test('resume: a client that was away receives only the missing deltas', async t => {
  const doc = 'forms/resume-' + uid()
  const log = []
  const c = client(t, { WebSocket: recordingSocket(log), binary: false })
  const other = client(t)
  const dc = c.doc(doc); const dother = other.doc(doc)
  await Promise.all([dc.ready, dother.ready])
  dother.set('step', 0)
  await until('C at v1', () => dc.version === 1)
  c.setOffline(true)
  for (let i = 1; i <= 3; i++) dother.set('step', i)
  await until('others settle', () => settled(dother) && dother.version === 4)
  log.length = 0
  c.setOffline(false)
  await until('C caught up', () => dc.version === 4 && dc.synced)
  const docMsgs = log.map(e => e.m).filter(m => m.doc === doc || m.h === dc.h) // deltas name it by its handle
  assert.deepEqual(docMsgs.map(m => [m.t, m.v]), [['delta', 2], ['delta', 3], ['delta', 4], ['synced', 4]])
  assert.equal(dc.state.step, 3)
})

test('the server\'s rules reach the client as rejections (roles claimed in hello)', async t => {
  const doc = 'approvals/js-' + uid()
  const editor = client(t)
  const approver = client(t, { roles: ['approver'] })
  const rejects = []
  editor.on('reject', r => rejects.push(r.code))
  const de = editor.doc(doc); const dp = approver.doc(doc)
  await Promise.all([de.ready, dp.ready])
  de.update([{ op: 'set', path: 'title', value: 'Laptop' }, { op: 'set', path: 'status', value: 'draft' }])
  await until('created', () => settled(de) && de.version === 1)
  de.set('status', 'approved')
  await until('invalid_transition', () => rejects.includes('invalid_transition'))
  de.set('status', 'submitted')
  await until('submitted', () => settled(de) && de.data.status === 'submitted')
  de.set('status', 'approved')
  await until('forbidden', () => rejects.includes('forbidden'))
  assert.equal(de.state.status, 'submitted', 'the refused edit is rolled back locally')
  await until('approver sees submitted', () => dp.state.status === 'submitted')
  dp.set('status', 'approved')
  await until('approved everywhere', () => de.state.status === 'approved' && settled(dp))
})

test('presence: focus relays to the other watchers and clears when the client leaves', async t => {
  const doc = 'forms/presence-' + uid()
  const a = client(t); const b = client(t)
  const da = a.doc(doc); const db = b.doc(doc)
  await Promise.all([da.ready, db.ready])
  da.presence({ field: 'title', name: 'Ann', color: '#e91e63' })
  await until('B sees Ann', () => db.peers.get(a.clientId)?.field === 'title')
  da.presence({ field: 'notes', name: 'Ann', color: '#e91e63' })
  await until('B sees the move', () => db.peers.get(a.clientId)?.field === 'notes')
  a.close()
  await until('Ann left', () => !db.peers.has(a.clientId))
})

// A live query follows the server on every transport: documents enter,
// change, leave by match and by the limit window, and after a reconnect
// the resumed query (with `have`) ends equal to the REST query.
for (const transport of ['ws', 'ws+bin', 'sse', 'longpoll']) {
  test(`a live query over ${transport} keeps the matching documents in order, across a reconnect`, async t => {
    const run = uid()
    const w = client(t)
    const r = client(t, transport.startsWith('ws') ? { binary: transport === 'ws+bin' } : { transport, WebSocket: undefined, pingInterval: 200 })
    const where = [['run', '==', run], ['status', '==', 'open']]
    const q = r.query('forms', { where, orderBy: [['prio', 'desc']], limit: 2 })
    const removed = []
    q.on('removed', (it, c) => removed.push([it.id, c.why]))
    assert.deepEqual(await q.ready, [])
    assert.equal(r.transport, transport)
    const ids = () => q.results.map(it => it.id).join()
    const put = (id, fields) => w.doc('forms/' + id).update(Object.entries(fields).map(([path, value]) => ({ op: 'set', path, value })))
    const [d1, d2, d3] = [1, 2, 3].map(i => `q${i}-${run}`)
    put(d1, { run, status: 'open', prio: 1 })
    put(d2, { run, status: 'open', prio: 5 })
    put(d3, { run, status: 'closed', prio: 9 })
    await until('both open documents, by prio desc', () => ids() === [d2, d1].join())
    put(d3, { status: 'open' })
    await until('d3 enters and pushes d1 out of the window', () => ids() === [d3, d2].join())
    put(d2, { status: 'closed' })
    await until('d2 leaves by match, d1 comes back', () => ids() === [d3, d1].join())
    assert.deepEqual(removed, [[d1, 'limit'], [d2, 'no_match']])
    assert.equal(q.results.find(it => it.id === d3).data.prio, 9)

    r.setOffline(true)
    put(d1, { prio: 2, note: 'while away' })
    put(d3, { status: 'closed' })
    await until('writes settle', () => [d1, d3].every(id => settled(w.doc('forms/' + id))))
    r.setOffline(false)
    const body = { where, order_by: [['prio', 'desc']], limit: 2 }
    await until('the resumed query equals the REST query', async () => {
      const server = (await rest('POST', '/v1/docs/forms/query', body)).body.items
      return ids() === [d1].join() && isDeepStrictEqual(q.results, server)
    })
    assert.equal(q.results[0].data.note, 'while away')
    q.close()
  })
}
