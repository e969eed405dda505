// Test kit for the client tests: a fake clock with timers, and a fake
// transport that lets a test play the server.
import { connect, memoryStorage, transports } from './client.js'

export function fakeClock (start = 1_764_096_000_000) {
  let now = start
  let seq = 0
  const timers = new Map()
  const add = (fn, ms, every) => { const id = ++seq; timers.set(id, { at: now + ms, fn, every }); return id }
  const clock = {
    now: () => now,
    timers: {
      setTimeout: (fn, ms = 0) => add(fn, ms, 0),
      setInterval: (fn, ms) => add(fn, ms, ms),
      clearTimeout: id => timers.delete(id),
      clearInterval: id => timers.delete(id)
    },
    /** Advances time, firing due timers in order. */
    advance (ms) {
      const end = now + ms
      for (;;) {
        let next = null
        for (const [id, t] of timers) if (t.at <= end && (!next || t.at < next[1].at)) next = [id, t]
        if (!next) break
        const [id, t] = next
        now = t.at
        if (t.every) t.at += t.every
        else timers.delete(id)
        t.fn()
      }
      now = end
    },
    pending: () => timers.size
  }
  return clock
}

let fakeSeq = 0

/**
 * Starts a client on a fake transport. Each connection attempt is recorded
 * in `conns`; a test answers as the server through conn.h.msg / conn.h.close.
 * `accept(conn)` decides per attempt whether the transport opens.
 */
export function harness (opts = {}, accept = () => true) {
  const name = 'fake' + (++fakeSeq)
  const conns = []
  transports[name] = (c, hello, h) => {
    const conn = { hello, h, sent: [], closed: false }
    conn.send = m => conn.sent.push(structuredClone(m))
    conn.close = () => { if (!conn.closed) { conn.closed = true; h.close(1000, 'closed') } }
    conn.drop = (code = 1006, reason = '') => { if (!conn.closed) { conn.closed = true; h.close(code, reason) } }
    conn.welcome = (extra = {}) => h.msg({ t: 'welcome', client: hello.client, session: 's', node: 'n', hb: 15000, proto: 2, ...extra })
    conns.push(conn)
    if (accept(conn)) {
      h.open(name)
      conn.sent.push(hello)
    } else {
      conn.closed = true
      h.close(1006, 'refused')
    }
    return conn
  }
  const clock = opts.clock || fakeClock()
  // A fresh store that has seen this client id: op ids start at 1.
  const storage = memoryStorage()
  storage.put('meta', { nextOp: 0 })
  const sync = connect('http://127.0.0.1:1', {
    transport: name, clientId: 'me', storage, now: clock.now, timers: clock.timers, random: () => 0.5, ...opts
  })
  return { sync, conns, clock, last: () => conns[conns.length - 1] }
}

/** Waits for pending promise callbacks (storage loads) to run. */
export const tick = () => new Promise(resolve => setImmediate(resolve))
