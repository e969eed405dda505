// Unit tests of the client against a fake transport (the test plays the
// server) with an injected clock.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Breaker, backoffDelay, chooseTransports, applyOps, memoryStorage, connect, transports, decodeJSON } from '../client.js'
import { harness, fakeClock, tick } from '../testkit.mjs'

const ops = conn => conn.sent.filter(m => m.t === 'op')

async function online (opts) {
  const h = harness(opts)
  await h.sync.ready
  h.last().welcome()
  return h
}

test('hello carries the client id, protocol version, token and roles', async () => {
  const { sync, last } = harness({ token: 'tok', roles: ['approver'] })
  await sync.ready
  assert.deepEqual(last().hello, { t: 'hello', client: 'me', proto: 2, token: 'tok', roles: ['approver'] })
})

test('welcome resumes: subscribe every document from its version, then queued ops in op order, then presence', async () => {
  const h = harness({ offline: true })
  await h.sync.ready
  const a = h.sync.doc('forms/a'); const b = h.sync.doc('forms/b')
  Object.assign(a, { version: 7 })
  b.set('x', 1); a.set('y', 2); b.increment('n')
  a.presence({ field: 'y' })
  h.sync.setOffline(false)
  h.last().welcome()
  const sent = h.last().sent.filter(m => m.t !== 'ping')
  assert.deepEqual(sent.map(m => [m.t, m.doc, m.since ?? m.op]), [
    ['hello', undefined, undefined],
    ['sub', 'forms/a', 7], ['presence', 'forms/a', undefined],
    ['sub', 'forms/b', 0],
    ['op', 'forms/b', 1], ['op', 'forms/a', 2], ['op', 'forms/b', 3]
  ])
  assert.equal(h.sync.status, 'online')
})

test('optimistic state: pending ops on top of the confirmed state, rebased on remote deltas and acks', async () => {
  const { sync, last } = await online()
  const d = sync.doc('forms/f1')
  const conn = last()
  conn.h.msg({ t: 'snap', doc: 'forms/f1', v: 3, data: { n: 1, title: 'a' } })
  conn.h.msg({ t: 'synced', doc: 'forms/f1', v: 3 })
  await d.ready
  d.increment('n', 10)
  d.set('title', 'mine')
  assert.deepEqual(d.state, { n: 11, title: 'mine' })
  assert.deepEqual(d.data, { n: 1, title: 'a' }, 'confirmed state untouched')
  assert.deepEqual(ops(conn).map(o => [o.op, o.base]), [[1, 3], [2, 3]])

  // Another client's change lands first: pending edits are replayed on it.
  conn.h.msg({ t: 'delta', doc: 'forms/f1', v: 4, pv: 3, by: 'other', op: 9, ops: [{ op: 'inc', path: 'n', value: 5 }, { op: 'set', path: 'other', value: true }] })
  assert.deepEqual(d.state, { n: 16, title: 'mine', other: true })
  assert.equal(d.version, 4)

  conn.h.msg({ t: 'ack', doc: 'forms/f1', op: 1, v: 5, pv: 4 })
  assert.deepEqual(d.data, { n: 16, title: 'a', other: true })
  assert.equal(d.pending.length, 1)
  assert.deepEqual(d.state, { n: 16, title: 'mine', other: true })
})

// withSnapshot returns forms/f1 synced at version 3 with data.
async function withSnapshot (data) {
  const { sync, last } = await online()
  const d = sync.doc('forms/f1')
  const conn = last()
  conn.h.msg({ t: 'snap', doc: 'forms/f1', v: 3, data })
  conn.h.msg({ t: 'synced', doc: 'forms/f1', v: 3 })
  await d.ready
  return { d, conn }
}

test('fields named like Object.prototype members count like any field, in the optimistic state and the confirmed copy', async () => {
  const { d, conn } = await withSnapshot({ title: 'a' })
  d.increment('toString', 2)
  d.increment('title') // the server refuses it (not a number); the view skips it meanwhile
  d.increment('constructor')
  assert.deepEqual(d.state, { title: 'a', toString: 2, constructor: 1 })
  conn.h.msg({ t: 'ack', doc: 'forms/f1', op: 1, v: 4, pv: 3 })
  conn.h.msg({ t: 'reject', doc: 'forms/f1', op: 2, code: 'invalid_op', msg: 'inc "title": field is not a number' })
  conn.h.msg({ t: 'delta', doc: 'forms/f1', v: 5, pv: 4, by: 'other', op: 1, ops: [{ op: 'inc', path: 'valueOf', value: 5 }] })
  conn.h.msg({ t: 'ack', doc: 'forms/f1', op: 3, v: 6, pv: 5 })
  assert.deepEqual(d.data, { title: 'a', toString: 2, valueOf: 5, constructor: 1 })
  assert.deepEqual(d.state, d.data)
  assert.equal(d.version, 6)
})

test('a delta the copy cannot apply resubscribes for a snapshot', async () => {
  const { d, conn } = await withSnapshot({ n: 'text' })
  conn.h.msg({ t: 'delta', doc: 'forms/f1', v: 4, pv: 3, by: 'other', op: 1, ops: [{ op: 'inc', path: 'n', value: 1 }] })
  assert.deepEqual(conn.sent.filter(m => m.t === 'sub').map(m => m.since), [0, 0], 'subscribed again from nothing')
  assert.deepEqual(d.data, { n: 'text' }, 'the copy is left as it was')
  assert.equal(d.version, 0)
  conn.h.msg({ t: 'snap', doc: 'forms/f1', v: 4, data: { n: 1 } })
  assert.deepEqual(d.state, { n: 1 })
  assert.equal(d.version, 4)
})

test('an ack with effective ops replaces the ops the client sent', async () => {
  const { sync, last } = await online()
  const d = sync.doc('forms/f1')
  const conn = last()
  conn.h.msg({ t: 'synced', doc: 'forms/f1' })
  d.set('tags', ['b'])
  d.set('title', 'lost')
  conn.h.msg({ t: 'ack', doc: 'forms/f1', op: 1, v: 1, new: true, ops: [{ op: 'set', path: 'tags', value: ['a', 'b'] }] })
  // An empty effective list: the merge kept a newer value; nothing changes.
  conn.h.msg({ t: 'ack', doc: 'forms/f1', op: 2, v: 2, pv: 1, ops: [] })
  assert.deepEqual(d.data, { tags: ['a', 'b'] })
  assert.deepEqual(d.state, d.data)
  assert.equal(d.pending.length, 0)
})

test('reconnect replays an op whose ack was lost; catch-up delta and dup ack count it once', async () => {
  const h = await online()
  const d = h.sync.doc('forms/f1')
  h.last().h.msg({ t: 'synced', doc: 'forms/f1' })
  d.increment('n', 2)
  h.last().drop()
  h.clock.advance(60_000)
  const conn = h.last()
  assert.equal(h.conns.length, 2)
  conn.welcome()
  assert.deepEqual(ops(conn).map(o => o.op), [1], 'resent with its original op id')
  conn.h.msg({ t: 'delta', doc: 'forms/f1', v: 1, by: 'me', op: 1, new: true, ops: [{ op: 'inc', path: 'n', value: 2 }] })
  conn.h.msg({ t: 'synced', doc: 'forms/f1', v: 1 })
  conn.h.msg({ t: 'ack', doc: 'forms/f1', op: 1, v: 1, dup: true })
  assert.deepEqual(d.state, { n: 2 })
  assert.equal(d.pending.length, 0)
})

test('compact forms: documents by handle, authors by number, stamps without a known node', async () => {
  const h = await online()
  const { sync, last } = h
  const seen = []
  sync.registerSyncHook('forms/f2', { onRemoteUpdate: c => seen.push([c.by, c.hlc, c.op]) })
  const a = sync.doc('forms/f1')
  const b = sync.doc('forms/f2')
  const conn = last()
  assert.deepEqual(conn.sent.filter(m => m.t === 'sub').map(m => [m.doc, m.h]), [['forms/f2', 1], ['forms/f1', 2]], 'handles in the order the documents were made')
  conn.h.msg({ t: 'snap', doc: 'forms/f2', v: 1, data: {} })
  conn.h.msg(decodeJSON('{"t":"delta","v":2,"by":"w","h":1,"a":7,"hlc":"1764096000000.0","set":{"title":"x"}}'))
  conn.h.msg({ t: 'delta', h: 1, v: 3, a: 7, hlc: '1764096000001.2.', ops: [{ op: 'set', path: 'n', value: 1 }] })
  assert.deepEqual(b.state, { title: 'x', n: 1 })
  assert.deepEqual(seen, [['w', '1764096000000.0.w', undefined], ['w', '1764096000001.2.n', undefined]])
  // An ack by handle, its stamp the client's own.
  conn.h.msg({ t: 'snap', doc: 'forms/f1', v: 1, data: {} })
  a.set('t', 1)
  conn.h.msg({ t: 'ack', h: 2, v: 2, op: 1, hlc: '1764096000002.0' })
  assert.equal(a.version, 2)
  assert.equal(a.pending.length, 0)
  // Author numbers belong to one connection.
  conn.drop()
  h.clock.advance(60_000)
  const next = last()
  assert.notEqual(next, conn)
  next.welcome()
  next.h.msg(decodeJSON('{"t":"delta","v":4,"h":1,"a":7,"set":{"n":2}}'))
  assert.equal(seen.length, 3)
  assert.equal(seen.at(-1)[0], undefined)
})

test('a server that refuses proto 2 gets proto 1, and its deltas name the document', async () => {
  const h = harness()
  await h.sync.ready
  const first = h.last()
  assert.equal(first.hello.proto, 2)
  first.drop(4504, 'unsupported protocol version')
  const conn = h.last()
  assert.notEqual(conn, first)
  assert.equal(conn.hello.proto, 1)
  conn.welcome({ proto: 1 })
  const d = h.sync.doc('forms/f1')
  conn.h.msg({ t: 'snap', doc: 'forms/f1', v: 1, data: {} })
  conn.h.msg({ t: 'delta', doc: 'forms/f1', v: 2, by: 'w', hlc: '1764096000000.0.w', ops: [{ op: 'set', path: 'a', value: 1 }] })
  assert.deepEqual(d.state, { a: 1 })
})

test('stale deltas are dropped; a gap resubscribes from the version held', async () => {
  const { sync, last } = await online()
  const d = sync.doc('forms/f1')
  const conn = last()
  conn.h.msg({ t: 'snap', doc: 'forms/f1', v: 5, data: { a: 1 } })
  conn.h.msg({ t: 'delta', doc: 'forms/f1', v: 5, ops: [{ op: 'set', path: 'a', value: 99 }] })
  assert.deepEqual(d.state, { a: 1 })
  conn.h.msg({ t: 'delta', doc: 'forms/f1', v: 8, pv: 7, ops: [{ op: 'set', path: 'a', value: 2 }] })
  assert.deepEqual(d.state, { a: 1 })
  assert.deepEqual(conn.sent.at(-1), { t: 'sub', doc: 'forms/f1', since: 5, h: 1 })
})

test('hooks: onRemoteUpdate sees others\' changes; onConflict may answer with ops to retry', async () => {
  const { sync, last } = await online()
  const seen = []
  sync.registerSyncHook('orders/o1', {
    onRemoteUpdate: (change, state) => seen.push([change.version, state.qty]),
    onConflict: c => [{ op: 'set', path: 'qty', value: c.details.theirs.qty + 1 }]
  })
  const d = sync.doc('orders/o1')
  const conn = last()
  conn.h.msg({ t: 'snap', doc: 'orders/o1', v: 1, data: { qty: 1 } })
  d.set('qty', 3)
  conn.h.msg({ t: 'delta', doc: 'orders/o1', v: 2, by: 'other', op: 4, ops: [{ op: 'set', path: 'qty', value: 2 }] })
  assert.deepEqual(seen, [[2, 3]])
  const rejects = []
  sync.on('reject', r => rejects.push(r.code))
  conn.h.msg({ t: 'reject', doc: 'orders/o1', op: 1, code: 'conflict', msg: 'stale', details: { base: 1, current: 2, theirs: { qty: 2 }, yours: [] } })
  assert.deepEqual(rejects, ['conflict'])
  assert.deepEqual(d.state, { qty: 2 }, 'the refused edit is rolled back')
  await tick()
  const retry = ops(conn).at(-1)
  assert.deepEqual([retry.op, retry.base, retry.ops], [2, 2, [{ op: 'set', path: 'qty', value: 3 }]])
})

test('retryable rejections are resent unchanged (same op id) per the retry policy', async () => {
  const h = await online()
  h.sync.registerSyncHook('forms/f1', { retryPolicy: { maxRetries: 2, backoff: 'exponential', base: 100 } })
  const d = h.sync.doc('forms/f1')
  const conn = h.last()
  d.set('a', 1)
  conn.h.msg({ t: 'reject', doc: 'forms/f1', op: 1, code: 'unavailable', msg: 'store down' })
  h.clock.advance(99)
  assert.equal(ops(conn).length, 1)
  h.clock.advance(1)
  assert.deepEqual(ops(conn).map(o => o.op), [1, 1])
  assert.deepEqual(ops(conn)[1], ops(conn)[0], 'the retry is the same op')
  assert.deepEqual(d.state, { a: 1 }, 'the resent edit is shown again')
  conn.h.msg({ t: 'reject', doc: 'forms/f1', op: 1, code: 'unavailable', msg: 'store down' })
  h.clock.advance(200)
  conn.h.msg({ t: 'reject', doc: 'forms/f1', op: 1, code: 'unavailable', msg: 'store down' })
  h.clock.advance(10_000)
  assert.deepEqual(ops(conn).map(o => o.op), [1, 1, 1], 'at most maxRetries retries')
  // Not retryable: given up at once.
  const rejected = []
  h.sync.on('reject', r => rejected.push(r.code))
  d.set('status', 'approved')
  conn.h.msg({ t: 'reject', doc: 'forms/f1', op: 2, code: 'forbidden', msg: 'approver only' })
  h.clock.advance(10_000)
  assert.deepEqual(rejected, ['forbidden'])
  assert.equal(ops(conn).length, 4)
})

test('ops carry trace context only when asked: the page tracer\'s, or a generated one', async () => {
  const plain = await online()
  plain.sync.doc('forms/f1').set('a', 1)
  assert.equal(ops(plain.last())[0].trace, undefined)

  const tp = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
  const hooked = await online({ trace: () => tp })
  hooked.sync.doc('forms/f1').set('a', 1)
  assert.equal(ops(hooked.last())[0].trace, tp)

  const own = await online({ trace: true })
  const d = own.sync.doc('forms/f1')
  d.set('a', 1); d.increment('n')
  const [a, b] = ops(own.last()).map(o => o.trace)
  assert.match(a, /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/)
  assert.notEqual(a, b, 'each op is its own span')
})

test('backoff: full jitter within [0, min(max, base * 2^n))', () => {
  for (let n = 0; n < 12; n++) {
    const cap = Math.min(5000, 100 * 2 ** n)
    assert.equal(backoffDelay(n, { base: 100, max: 5000 }, () => 0), 0)
    assert.ok(backoffDelay(n, { base: 100, max: 5000 }, () => 0.999999) < cap)
    for (let i = 0; i < 200; i++) {
      const d = backoffDelay(n, { base: 100, max: 5000 })
      assert.ok(d >= 0 && d < cap, `attempt ${n}: ${d} outside [0, ${cap})`)
    }
  }
  assert.equal(backoffDelay(1000, { base: 100, max: 5000 }, () => 0.5), 2500, 'huge attempt counts stay capped')
})

test('breaker: closed → open after N failures → half-open after the cool-down → closed on success', () => {
  const clock = fakeClock()
  const b = new Breaker({ threshold: 3, cooldown: 10_000, now: clock.now })
  assert.equal(b.state, 'closed')
  b.failure(); b.failure()
  assert.ok(b.allow())
  b.failure()
  assert.equal(b.state, 'open')
  assert.equal(b.allow(), false)
  clock.advance(4000)
  assert.equal(b.retryIn(), 6000)
  assert.equal(b.allow(), false)
  clock.advance(6000)
  assert.equal(b.allow(), true)
  assert.equal(b.state, 'half-open')
  b.failure()
  assert.equal(b.state, 'open', 'a failed probe opens it again')
  assert.equal(b.allow(), false)
  clock.advance(10_000)
  assert.ok(b.allow())
  b.success()
  assert.equal(b.state, 'closed')
  assert.equal(b.failures, 0)
})

test('a server that is down is retried within the 5 s cap and never trips the breaker', async () => {
  let up = false
  const h = harness({ random: () => 0.999 }, () => up)
  await h.sync.ready
  const at = []
  h.sync.on('status', e => { if (e.retryIn != null) at.push(e.retryIn) })
  h.clock.advance(60_000)
  assert.ok(h.conns.length >= 12, `${h.conns.length} attempts in a minute`)
  assert.ok(Math.max(...at) <= 5000, `longest wait ${Math.max(...at)} ms`)
  assert.equal(h.sync.breaker.state, 'closed')
  up = true
  h.clock.advance(5000)
  h.last().welcome()
  assert.equal(h.sync.status, 'online')
})

test('backoff defaults: every wait is under 5 s, however many attempts failed', () => {
  for (const n of [0, 3, 10, 50]) assert.ok(backoffDelay(n, undefined, () => 0.999999) < 5000)
})

test('online and visibilitychange (visible) retry at once; hidden pages wait', async () => {
  const win = new EventTarget()
  const doc = Object.assign(new EventTarget(), { visibilityState: 'visible' })
  Object.assign(globalThis, { addEventListener: win.addEventListener.bind(win), removeEventListener: win.removeEventListener.bind(win), document: doc })
  try {
    let up = false
    const h = harness({ random: () => 0.999 }, () => up)
    await h.sync.ready
    h.clock.advance(20_000) // waits have grown to the cap
    const n = h.conns.length
    up = true
    win.dispatchEvent(new Event('online'))
    assert.equal(h.conns.length, n + 1, 'reconnected on online without waiting')
    h.last().welcome()
    assert.equal(h.sync.status, 'online')
    h.last().drop()
    h.clock.advance(100)
    up = false
    h.clock.advance(20_000)
    doc.visibilityState = 'hidden'
    const m = h.conns.length
    doc.dispatchEvent(new Event('visibilitychange'))
    assert.equal(h.conns.length, m, 'a hidden page does not retry early')
    doc.visibilityState = 'visible'
    doc.dispatchEvent(new Event('visibilitychange'))
    assert.equal(h.conns.length, m + 1)
    h.sync.close()
    win.dispatchEvent(new Event('online'))
    assert.equal(h.conns.length, m + 1, 'a closed client stays closed')
  } finally {
    delete globalThis.addEventListener; delete globalThis.removeEventListener; delete globalThis.document
  }
})

test('a server that accepts and drops at once still trips the breaker', async () => {
  const h = harness({ breaker: { threshold: 2, cooldown: 60_000 } })
  await h.sync.ready
  h.last().welcome(); h.last().drop(4005, 'unavailable')
  h.clock.advance(2000)
  h.last().welcome(); h.last().drop(4005, 'unavailable')
  assert.equal(h.sync.breaker.state, 'open')
  const n = h.conns.length
  h.clock.advance(59_000)
  assert.equal(h.conns.length, n)
})

test('close codes: 4000–4499 reconnect, 4500+ stop', async () => {
  const h = await online()
  h.last().drop(4000, 'shutting down')
  assert.equal(h.sync.status, 'offline')
  h.clock.advance(1000)
  assert.equal(h.conns.length, 2)
  h.last().welcome()
  h.last().drop(4501, 'unauthorized')
  assert.equal(h.sync.status, 'stopped')
  h.clock.advance(600_000)
  assert.equal(h.conns.length, 2, 'no reconnect after 4501')
})

test('offline: edits queue, consecutive edits of one field fold, replay keeps the original op ids', async () => {
  const h = await online()
  const d = h.sync.doc('forms/f1')
  h.last().h.msg({ t: 'synced', doc: 'forms/f1' })
  d.set('title', 'x')
  h.sync.setOffline(true)
  assert.equal(h.sync.status, 'paused')
  for (const s of ['H', 'He', 'Hel', 'Hell', 'Hello']) d.set('title', s)
  d.increment('n')
  d.set('body', 'b')
  assert.deepEqual(d.pending.map(p => [p.op, p.ops[0].value]), [[1, 'x'], [2, 'Hello'], [3, 1], [4, 'b']])
  h.clock.advance(600_000)
  assert.equal(h.conns.length, 1, 'no reconnect while forced offline')
  h.sync.setOffline(false)
  h.last().welcome()
  assert.deepEqual(ops(h.last()).map(o => o.op), [1, 2, 3, 4])
  assert.deepEqual(ops(h.last())[1].ops, [{ op: 'set', path: 'title', value: 'Hello' }])
})

test('the queue is durable: a new client on the same storage replays it with the original op ids', async () => {
  const storage = memoryStorage()
  const a = harness({ storage, offline: true })
  await a.sync.ready
  const d = a.sync.doc('forms/f1')
  const ids = [d.set('a', 1).op, d.increment('n', 2).op]
  await tick()
  a.sync.close()
  // "Reload": same client id, same storage.
  const b = harness({ storage })
  await b.sync.ready
  const conn = b.last()
  conn.welcome()
  assert.deepEqual(ops(conn).map(o => [o.op, o.ops[0].op]), [[ids[0], 'set'], [ids[1], 'inc']])
  assert.deepEqual(b.sync.doc('forms/f1').state, { a: 1, n: 2 })
  b.sync.doc('forms/f1').set('c', 3)
  assert.equal(ops(conn).at(-1).op, ids[1] + 1, 'op ids continue after the stored ones')
})

test('edits made before storage has loaded get op ids after the stored ones', async () => {
  const storage = memoryStorage()
  await storage.put('meta', { nextOp: 41 })
  const h = harness({ storage })
  h.sync.doc('forms/f1').set('early', true)
  await h.sync.ready
  h.last().welcome()
  assert.deepEqual(ops(h.last()).map(o => o.op), [42])
})

test('a client id reused without stored state starts op ids from the clock', async () => {
  const h = harness({ clientId: 'reused', storage: memoryStorage() })
  await h.sync.ready
  h.last().welcome()
  const d = h.sync.doc('forms/f1')
  d.set('a', 1)
  assert.ok(ops(h.last())[0].op >= 1_764_096_000_000)
})

test('fallback selection: WebSocket, else SSE, else long-poll; forced by the option', () => {
  const fetch = () => {}
  assert.deepEqual(chooseTransports('auto', { WebSocket: class {}, fetch, ReadableStream: class {} }), ['ws', 'sse', 'longpoll'])
  assert.deepEqual(chooseTransports('auto', { fetch, ReadableStream: class {} }), ['sse', 'longpoll'])
  assert.deepEqual(chooseTransports('auto', { fetch }), ['longpoll'])
  assert.deepEqual(chooseTransports('sse', { WebSocket: class {} }), ['sse'])
})

test('a WebSocket that never opens falls back to SSE after two attempts', async () => {
  const clock = fakeClock()
  let made = 0
  class DeadSocket {
    constructor () { made++; setImmediate(() => this.onclose?.({ code: 1006 })) }
    close () {}
  }
  const posts = []
  const fetch = async (url) => { posts.push(url); throw new Error('offline') }
  const sync = connect('http://127.0.0.1:1', { clientId: 'me', WebSocket: DeadSocket, fetch, storage: memoryStorage(), now: clock.now, timers: clock.timers, random: () => 0 })
  await sync.ready
  for (let i = 0; i < 5 && posts.length === 0; i++) {
    await tick(); await tick()
    clock.advance(100)
  }
  assert.equal(made, 2)
  assert.match(posts[0], /\/v1\/events\?hello=/)
  sync.close()
})

test('latency: a pong to the client\'s ping gives the round trip', async () => {
  const h = await online()
  const rtts = []
  h.sync.on('latency', r => rtts.push(r))
  const ping = h.last().sent.find(m => m.t === 'ping')
  h.clock.advance(42)
  h.last().h.msg({ t: 'pong', ts: ping.ts })
  assert.deepEqual(rtts, [42])
  h.last().h.msg({ t: 'ping', ts: 5 })
  assert.deepEqual(h.last().sent.at(-1), { t: 'pong', ts: 5 })
})

test('silence for 2.5 heartbeats drops the connection and reconnects', async () => {
  const h = await online({ pingInterval: 1000 })
  h.last().h.msg({ t: 'synced', doc: 'x/y' })
  h.clock.advance(15000 * 2.5 + 1000)
  assert.ok(h.conns.length >= 2, 'reconnected')
})

test('presence: peers come and go; a lost connection clears them', async () => {
  const h = await online()
  const d = h.sync.doc('forms/f1')
  const conn = h.last()
  conn.h.msg({ t: 'presence', doc: 'forms/f1', client: 'ann', data: { field: 'title', color: '#e91e63' } })
  conn.h.msg({ t: 'presence', doc: 'forms/f1', client: 'bob', data: { field: 'body' } })
  conn.h.msg({ t: 'presence', doc: 'forms/f1', client: 'bob', del: true })
  assert.deepEqual([...d.peers], [['ann', { field: 'title', color: '#e91e63' }]])
  d.presence({ field: 'title' })
  assert.deepEqual(conn.sent.at(-1), { t: 'presence', doc: 'forms/f1', data: { field: 'title' } })
  conn.drop()
  assert.equal(d.peers.size, 0)
})

test('presence: a document the read rules hide drops the peers; readable again, ours is set again', async () => {
  const h = await online()
  const d = h.sync.doc('forms/f1')
  const conn = h.last()
  conn.h.msg({ t: 'snap', doc: 'forms/f1', v: 1, data: { a: 1 } })
  d.presence({ field: 'a' })
  conn.h.msg({ t: 'presence', doc: 'forms/f1', client: 'ann', data: { field: 'b' } })
  const seen = []
  d.on('presence', p => seen.push(p.size))
  conn.h.msg({ t: 'error', doc: 'forms/f1', code: 'not_readable', v: 2, msg: 'hidden' })
  assert.equal(d.peers.size, 0)
  assert.deepEqual(seen, [0])
  const sent = conn.sent.length
  conn.h.msg({ t: 'snap', doc: 'forms/f1', v: 3, data: { a: 2 } })
  assert.deepEqual(conn.sent.slice(sent), [{ t: 'presence', doc: 'forms/f1', data: { field: 'a' } }])
  conn.h.msg({ t: 'snap', doc: 'forms/f1', v: 4, data: { a: 3 } })
  assert.equal(conn.sent.length, sent + 1, 'presence is set again once, when the document becomes readable')
})

test('applyOps follows the server: nested set, unset, inc, sets in canonical order', () => {
  const d = {}
  applyOps(d, [
    { op: 'set', path: 'a.b', value: 1 },
    { op: 'inc', path: 'n', value: 2 }, { op: 'inc', path: 'n', value: 3 },
    { op: 'add', path: 's', value: 'b' }, { op: 'add', path: 's', value: 'a' }, { op: 'add', path: 's', value: 'b' },
    { op: 'remove', path: 'gone', value: 1 },
    { op: 'unset', path: 'a.x.y' }
  ])
  assert.deepEqual(d, { a: { b: 1 }, n: 5, s: ['a', 'b'] })
  applyOps(d, [{ op: 'remove', path: 's', value: 'a' }, { op: 'unset', path: 'a.b' }])
  assert.deepEqual(d, { a: {}, n: 5, s: ['b'] })
})

test('the transports table is extensible (custom transports)', () => {
  assert.deepEqual(Object.keys(transports).slice(0, 3), ['ws', 'sse', 'longpoll'])
})

test('change objects: hooks and change events get {doc, version, ops, by, op, created, deleted, local}, not wire messages', async () => {
  const { sync, last } = await online()
  const hooked = []; const infos = []
  sync.registerSyncHook('forms/c1', { onRemoteUpdate: (change, state) => hooked.push([change, state.n]) })
  const d = sync.doc('forms/c1')
  d.on('change', (state, info) => infos.push(info))
  const conn = last()
  conn.h.msg({ t: 'delta', doc: 'forms/c1', v: 1, by: 'other', op: 7, new: true, hlc: '5.0.other', ops: [{ op: 'inc', path: 'n', value: 2 }] })
  d.set('title', 'x')
  conn.h.msg({ t: 'ack', doc: 'forms/c1', op: 1, v: 2, pv: 1 })
  const remote = { doc: 'forms/c1', version: 1, ops: [{ op: 'inc', path: 'n', value: 2 }], by: 'other', op: 7, hlc: '5.0.other', created: true, deleted: false, local: false }
  assert.deepEqual(hooked, [[remote, 2]])
  assert.ok(!('t' in hooked[0][0]) && !('v' in hooked[0][0]), 'no wire fields')
  assert.deepEqual(infos.map(i => Object.keys(i).sort().join()), ['change,remote', 'local', 'ack,change'])
  assert.deepEqual(infos[0].change, remote)
  assert.deepEqual(infos[2].change, { doc: 'forms/c1', version: 2, ops: [{ op: 'set', path: 'title', value: 'x' }], by: 'me', op: 1, hlc: undefined, created: false, deleted: false, local: true })
})

test('invalid document names throw at the call with code invalid_name', async () => {
  const { sync, last } = await online()
  for (const bad of ['forms', 'Forms/a', 'forms/', '/a', 'forms/a/b', 'forms/a..b', 'forms/-a', 'forms/a b', 'x'.repeat(65) + '/a', 'forms/' + 'a'.repeat(129), 42, undefined]) {
    assert.throws(() => sync.doc(bad), e => e.code === 'invalid_name', String(bad))
    // A name without "/" is a collection (a collection-level hook), checked as one.
    if (bad !== 'forms') assert.throws(() => sync.registerSyncHook(bad, {}), e => e.code === 'invalid_name', String(bad))
  }
  assert.equal(sync.docs.size, 0)
  assert.equal(last().sent.filter(m => m.t === 'sub').length, 0, 'nothing subscribed')
  assert.throws(() => sync.registerSyncHook('Forms', {}), e => e.code === 'invalid_name')
  for (const ok of ['forms/a', 'a_b-c/X.y@z-1', 'x'.repeat(64) + '/' + 'a'.repeat(128)]) assert.equal(sync.doc(ok).name, ok)
})

test('a refused origin stops the client with 4502 and an origin_not_allowed error event', async () => {
  const body = { error: { code: 'forbidden', message: 'origin "https://evil.example" is not allowed (AUTOGLM_ALLOWED_ORIGINS)', details: { origin: 'https://evil.example' } } }
  const fetch = async () => new Response(JSON.stringify(body), { status: 403, headers: { 'content-type': 'application/json' } })
  const clock = fakeClock()
  const sync = connect('http://127.0.0.1:1', { transport: 'sse', clientId: 'me', fetch, storage: memoryStorage(), now: clock.now, timers: clock.timers })
  const errors = []; const statuses = []
  sync.on('error', e => errors.push(e))
  sync.on('status', e => statuses.push(e))
  await sync.ready
  for (let i = 0; i < 20 && sync.status !== 'stopped'; i++) await tick()
  assert.equal(sync.status, 'stopped')
  assert.equal(statuses.at(-1).code, 4502)
  assert.deepEqual(errors.map(e => [e.code, e.details.origin]), [['origin_not_allowed', 'https://evil.example']])
})

test('a transport that has worked is kept while the server is down (no fallback to long-poll after an outage)', async () => {
  let up = true
  const h = harness({}, () => up)
  h.sync.order = [h.sync.order[0], 'longpoll'] // the fake stands for WebSocket
  await h.sync.ready
  h.last().welcome()
  up = false
  h.last().drop()
  h.clock.advance(30_000)
  assert.ok(h.conns.length > 4)
  assert.equal(h.sync._ti, 0, 'still on the transport that worked')
  up = true
  h.clock.advance(5000)
  h.last().welcome()
  assert.equal(h.sync.transport, h.sync.order[0])
})

test('replaying a closed tab\'s queue ends only when every op is answered, not while a refused one waits for its retry', async () => {
  const h = await online()
  const d = h.sync.doc('forms/f1')
  let drained = 0
  h.sync._whenDrained = () => drained++
  d.set('a', 1)
  h.last().h.msg({ t: 'reject', doc: 'forms/f1', op: 1, code: 'unavailable', msg: 'store down' })
  await tick()
  assert.equal(drained, 0, 'the op waits for its retry')
  h.clock.advance(500)
  assert.deepEqual(ops(h.last()).map(o => o.op), [1, 1])
  h.last().h.msg({ t: 'ack', doc: 'forms/f1', op: 1, v: 1, new: true })
  await tick()
  assert.equal(drained, 1)
})

// ---- live queries

const subs = conn => conn.sent.filter(m => m.t === 'sub' && m.qid)

test('a live query keeps its results in order through snap, added, delta and removed', async () => {
  const { sync, last } = await online()
  const q = sync.query('tasks', { where: [['status', '==', 'open']], orderBy: [['prio', 'desc']], limit: 2 })
  const conn = last()
  assert.deepEqual(subs(conn), [{ t: 'sub', coll: 'tasks', qid: q.qid, query: { where: [['status', '==', 'open']], order_by: [['prio', 'desc']], limit: 2 }, have: {} }])
  const events = []
  for (const t of ['added', 'changed', 'removed']) q.on(t, (it, c) => events.push([t, it.id, it.version, c.why]))
  const ids = () => q.results.map(r => r.id + '@' + r.version)
  conn.h.msg({ t: 'snap', qid: q.qid, doc: 'tasks/a', v: 3, data: { status: 'open', prio: 1 } })
  conn.h.msg({ t: 'snap', qid: q.qid, doc: 'tasks/b', v: 1, data: { status: 'open', prio: 5 } })
  conn.h.msg({ t: 'synced', qid: q.qid, coll: 'tasks' })
  assert.deepEqual(await q.ready, q.results)
  assert.deepEqual(ids(), ['b@1', 'a@3'], 'ordered by prio desc, whatever the arrival order')
  // a delta reorders; a stale one is dropped
  conn.h.msg({ t: 'delta', qid: q.qid, doc: 'tasks/a', v: 4, by: 'other', op: 2, ops: [{ op: 'set', path: 'prio', value: 9 }] })
  conn.h.msg({ t: 'delta', qid: q.qid, doc: 'tasks/a', v: 4, by: 'other', op: 2, ops: [{ op: 'set', path: 'prio', value: 0 }] })
  assert.deepEqual(ids(), ['a@4', 'b@1'])
  assert.equal(q.results[0].data.prio, 9)
  // the limit window moves: c pushes b out, then a leaves by match and b comes back
  conn.h.msg({ t: 'added', qid: q.qid, doc: 'tasks/c', v: 1, data: { status: 'open', prio: 7 } })
  conn.h.msg({ t: 'removed', qid: q.qid, doc: 'tasks/b', v: 1, why: 'limit' })
  assert.deepEqual(ids(), ['a@4', 'c@1'])
  conn.h.msg({ t: 'removed', qid: q.qid, doc: 'tasks/a', v: 5, why: 'no_match' })
  conn.h.msg({ t: 'added', qid: q.qid, doc: 'tasks/b', v: 1, data: { status: 'open', prio: 5 } })
  assert.deepEqual(ids(), ['c@1', 'b@1'])
  assert.deepEqual(events, [['added', 'a', 3, undefined], ['added', 'b', 1, undefined], ['changed', 'a', 4, undefined],
    ['added', 'c', 1, undefined], ['removed', 'b', 1, 'limit'], ['removed', 'a', 4, 'no_match'], ['added', 'b', 1, undefined]])
  // messages of other queries and documents do not touch it
  conn.h.msg({ t: 'added', qid: 'other', doc: 'tasks/z', v: 1, data: {} })
  assert.deepEqual(ids(), ['c@1', 'b@1'])
  q.close()
  assert.deepEqual(conn.sent.at(-1), { t: 'unsub', qid: q.qid })
  conn.h.msg({ t: 'added', qid: q.qid, doc: 'tasks/y', v: 1, data: {} })
  assert.deepEqual(ids(), ['c@1', 'b@1'], 'nothing after close')
})

test('a live query resumes with have after a reconnect and after a version gap', async () => {
  const { sync, last, clock } = await online()
  const q = sync.query('tasks')
  let conn = last()
  conn.h.msg({ t: 'snap', qid: q.qid, doc: 'tasks/a', v: 2, data: { n: 1 } })
  conn.h.msg({ t: 'snap', qid: q.qid, doc: 'tasks/b', v: 1, data: { n: 2 } })
  conn.h.msg({ t: 'synced', qid: q.qid, coll: 'tasks' })
  // a delta that does not follow the held version: resume from what is held
  conn.h.msg({ t: 'delta', qid: q.qid, doc: 'tasks/a', v: 4, ops: [{ op: 'set', path: 'n', value: 5 }] })
  assert.equal(q.results[0].version, 2)
  assert.deepEqual(subs(conn).at(-1).have, { a: 2, b: 1 })
  conn.drop()
  clock.advance(60_000)
  await tick()
  conn = last()
  assert.notEqual(conn, undefined)
  conn.welcome()
  assert.deepEqual(subs(conn), [{ t: 'sub', coll: 'tasks', qid: q.qid, query: {}, have: { a: 2, b: 1 } }])
  // the server sends what changed: a delta for a, b no longer in the result
  const changes = []
  q.on('change', (results, it) => changes.push(it.id))
  conn.h.msg({ t: 'delta', qid: q.qid, doc: 'tasks/a', v: 3, ops: [{ op: 'inc', path: 'n', value: 1 }] })
  conn.h.msg({ t: 'removed', qid: q.qid, doc: 'tasks/b', why: 'resync' })
  conn.h.msg({ t: 'synced', qid: q.qid, coll: 'tasks' })
  assert.deepEqual(q.results, [{ id: 'a', version: 3, data: { n: 2 } }])
  assert.deepEqual(changes, ['a', 'b'])
})

test('a collection-level hook follows every readable document with change objects', async () => {
  const { sync, last } = await online()
  const got = []
  const off = sync.registerSyncHook('profiles', {
    onRemoteUpdate: (change, state) => got.push(['update', change, state]),
    onRemove: (change) => got.push(['remove', change])
  })
  const conn = last()
  const [sub] = subs(conn)
  assert.deepEqual({ ...sub, qid: 0 }, { t: 'sub', coll: 'profiles', qid: 0, query: {}, have: {} })
  conn.h.msg({ t: 'snap', qid: sub.qid, doc: 'profiles/u1', v: 1, data: { name: 'Ann' } })
  conn.h.msg({ t: 'delta', qid: sub.qid, doc: 'profiles/u1', v: 2, by: 'other', op: 4, hlc: '9.0.other', ops: [{ op: 'set', path: 'name', value: 'Bo' }] })
  conn.h.msg({ t: 'delta', qid: sub.qid, doc: 'profiles/u1', v: 3, by: 'me', op: 1, ops: [{ op: 'set', path: 'x', value: 1 }] })
  conn.h.msg({ t: 'removed', qid: sub.qid, doc: 'profiles/u1', v: 4, why: 'deleted' })
  assert.deepEqual(got, [
    ['update', { doc: 'profiles/u1', version: 1, ops: [], snapshot: true }, { name: 'Ann' }],
    ['update', { doc: 'profiles/u1', version: 2, ops: [{ op: 'set', path: 'name', value: 'Bo' }], by: 'other', op: 4, hlc: '9.0.other', created: false, deleted: false, local: false }, { name: 'Bo' }],
    ['remove', { doc: 'profiles/u1', version: 4, ops: [], deleted: true, why: 'deleted' }]
  ], 'own changes are not reported; removal says why')
  off()
  assert.deepEqual(conn.sent.at(-1), { t: 'unsub', qid: sub.qid })
})

test('query results sort as the server does: missing < null < booleans < numbers < strings < arrays/objects, ties by id', async () => {
  const { sync, last } = await online()
  const q = sync.query('tasks', { orderBy: [['k', 'asc']] })
  const values = [['h', { a: 1 }], ['g', [1]], ['f', 'b'], ['e', 'a'], ['d', 10], ['c', 9], ['b2', true], ['b1', false], ['a2', null], ['a1', undefined], ['a0', 9]]
  for (const [id, k] of values) last().h.msg({ t: 'snap', qid: q.qid, doc: 'tasks/' + id, v: 1, data: k === undefined ? {} : { k } })
  assert.deepEqual(q.results.map(r => r.id), ['a1', 'a2', 'b1', 'b2', 'a0', 'c', 'd', 'e', 'f', 'g', 'h'])
  const desc = sync.query('tasks', { orderBy: [['k', 'desc']] })
  for (const [id, k] of values) last().h.msg({ t: 'snap', qid: desc.qid, doc: 'tasks/' + id, v: 1, data: k === undefined ? {} : { k } })
  assert.deepEqual(desc.results.map(r => r.id), ['h', 'g', 'f', 'e', 'd', 'a0', 'c', 'b2', 'b1', 'a2', 'a1'])
})
