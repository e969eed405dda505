// The fallback transports carry the client's token on every request to
// their session: the server answers a session only to the identity that
// opened it.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { transports } from '../client.js'

// fakeServer answers the requests of one long-poll or SSE session and
// records them.
function fakeServer () {
  const calls = []
  const json = body => ({ ok: true, status: 200, json: async () => body })
  const fetch = async (url, init = {}) => {
    calls.push({ url, method: init.method || 'GET', headers: init.headers || {} })
    if (url.endsWith('/v1/poll')) return json({ session: 's1', seq: 1, messages: [{ t: 'welcome', session: 's1' }] })
    if (url.includes('/v1/poll/s1?after=')) return json({ seq: 1, messages: [], close: { code: 1000, reason: 'done' } })
    if (url.includes('/v1/events?')) {
      const body = new ReadableStream({
        start (c) { c.enqueue(new TextEncoder().encode('data: {"t":"welcome","session":"s1"}\n\nevent: close\ndata: {"code":1000}\n\n')); c.close() }
      })
      return { ok: true, status: 200, body }
    }
    return { ok: true, status: 204 }
  }
  return { calls, fetch }
}

for (const kind of ['longpoll', 'sse']) {
  test(`${kind}: posts and polls carry the token`, async () => {
    const { calls, fetch } = fakeServer()
    const c = { o: { fetch, token: 'tok' }, httpURL: 'http://x' }
    const closed = new Promise(resolve => {
      const conn = transports[kind](c, { t: 'hello', token: 'tok' }, { open () {}, msg () {}, close: resolve })
      conn.send({ t: 'ping', ts: 1 })
    })
    await closed
    const later = calls.filter(x => x.url.includes('/s1'))
    assert.ok(later.some(x => x.method === 'POST'), JSON.stringify(calls))
    for (const x of later) assert.equal(x.headers.authorization, 'Bearer tok', `${x.method} ${x.url}`)
  })
}
