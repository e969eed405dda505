// Load driver for the peer comparison in `make bench` (app/bench/peers.go).
// One process runs either the writer or a share of the subscribers of one
// document, speaking the wire protocol of the server under test:
//
//   hocuspocus  @hocuspocus/provider (Yjs over the Hocuspocus protocol)
//   yws         y-websocket's WebsocketProvider (Yjs over y-protocols)
//   ours-json   Open-AutoGLM, JSON subprotocol (raw WebSocket)
//   ours-bin    Open-AutoGLM, binary subprotocol (frames from app/web/client.js)
//
// Every kind gets the same document (FIELDS string fields of ~100 bytes),
// the same values (40 bytes: the writer's monotonic clock in nanoseconds,
// zero padded) and the same pacing. A subscriber's latency for an update is
// its arrival time (same monotonic clock, same machine) minus the value.
// Bytes are WebSocket payload bytes received, counted on the socket's
// message events. Control over stdin/stdout, one JSON object per line.
//
//   node driver.mjs <kind> <url> <doc> writer <rate> <seconds>
//   node driver.mjs <kind> <url> <doc> subs <count>
import * as Y from 'yjs'
import WebSocket from 'ws'
import { createInterface } from 'node:readline'
import { HocuspocusProvider } from '@hocuspocus/provider'
import { WebsocketProvider } from 'y-websocket'
import { Awareness } from 'y-protocols/awareness'
import { encodeFrames, decodeFrames, decodeJSON } from '../../web/client.js'

const FIELDS = 100
// Protocol version of our clients (2: the compact forms of deltas; 1 for comparison).
const PROTO = Number(process.env.AUTOGLM_BENCH_PROTO || 2)
const [kind, url, doc, role, a1, a2] = process.argv.slice(2)
const now = () => process.hrtime.bigint()
const out = o => process.stdout.write(JSON.stringify(o) + '\n')
const field = i => 'f' + String(i).padStart(2, '0')
const value = () => String(now()).padStart(40, '0')
const seedValue = i => ('seed-' + i + '-').padEnd(100, 'x')

let counting = false
let bytes = 0
const countBytes = d => { if (counting) bytes += d.byteLength ?? d.length }

// CountingWS is the WebSocket the Yjs providers use; it counts the payload
// of every message received.
class CountingWS extends WebSocket {
  constructor (...args) {
    super(...args)
    this.on('message', countBytes)
  }
}

// ---- Yjs clients -------------------------------------------------------------

// The clients publish no awareness (presence) state, as our subscribers
// publish no presence: with it, every connection's state is broadcast to
// every other one (N² messages while N clients connect). y-websocket's
// cross-tab BroadcastChannel is off: the clients of one process stand for
// separate browsers, each synced by the server alone.
function yjsClient () {
  const ydoc = new Y.Doc()
  let provider
  const synced = new Promise(resolve => {
    if (kind === 'hocuspocus') {
      provider = new HocuspocusProvider({ url, name: doc, document: ydoc, WebSocketPolyfill: CountingWS, awareness: null, onSynced: () => resolve() })
    } else {
      const awareness = new Awareness(ydoc)
      awareness.setLocalState(null)
      provider = new WebsocketProvider(url, doc, ydoc, { WebSocketPolyfill: CountingWS, awareness, disableBc: true })
      provider.on('sync', s => { if (s) resolve() })
    }
  })
  const map = ydoc.getMap('data')
  return {
    synced,
    size: () => map.size,
    set: (k, v) => map.set(k, v),
    seed: () => ydoc.transact(() => { for (let i = 0; i < FIELDS; i++) map.set(field(i), seedValue(i)) }),
    onValue: fn => map.observe(ev => { for (const k of ev.keysChanged) fn(map.get(k)) }),
    close: () => provider.destroy()
  }
}

// ---- Open-AutoGLM client ---------------------------------------------------------

function oursClient () {
  const bin = kind === 'ours-bin'
  const ws = new WebSocket(url.replace(/^http/, 'ws') + '/v1/sync', bin ? 'autoglm.bin.v1' : 'autoglm.json.v1')
  ws.binaryType = 'nodebuffer'
  const send = m => ws.send(bin ? encodeFrames(m) : JSON.stringify(m))
  let onMsg = () => {}
  let size = 0
  const listeners = []
  let opID = 0
  const pending = new Map()
  const acks = []
  ws.on('message', (d, isBinary) => {
    countBytes(d)
    const ms = isBinary ? decodeFrames(new Uint8Array(d.buffer, d.byteOffset, d.byteLength)) : [decodeJSON(d)]
    for (const m of ms) {
      if (m.t === 'ping') send({ t: 'pong', ts: m.ts })
      else if (m.t === 'snap') { size = Object.keys(m.data || {}).length; onMsg(m) } else if (m.t === 'delta') {
        for (const o of m.ops || []) if (o.op === 'set') for (const fn of listeners) fn(o.value)
      } else if (m.t === 'ack') {
        const t = pending.get(m.op)
        if (t !== undefined) { pending.delete(m.op); acks.push(Number(now() - t) / 1e3) }
      } else if (m.t === 'error' || m.t === 'reject') process.stderr.write('server: ' + JSON.stringify(m) + '\n')
      else onMsg(m)
    }
  })
  const opened = new Promise((resolve, reject) => {
    ws.once('open', () => {
      onMsg = m => { if (m.t === 'welcome') resolve() }
      send({ t: 'hello', client: 'peer-' + process.pid + '-' + Math.random().toString(36).slice(2, 8), proto: PROTO })
    })
    ws.once('error', reject)
  })
  return {
    synced: opened.then(() => new Promise(resolve => {
      onMsg = m => { if (m.t === 'snap' || m.t === 'synced') resolve() }
      send({ t: 'sub', doc, h: 1 }) // the compact forms name the document 1
    })),
    opened,
    size: () => size,
    set: (k, v) => { opID++; pending.set(opID, now()); send({ t: 'op', doc, op: opID, ops: [{ op: 'set', path: k, value: v }] }) },
    onValue: fn => listeners.push(fn),
    acks,
    close: () => ws.close()
  }
}

const client = () => kind.startsWith('ours') ? oursClient() : yjsClient()

// ---- roles --------------------------------------------------------------------

const lines = createInterface({ input: process.stdin })
const nextLine = () => new Promise(resolve => lines.once('line', resolve))

async function writer (rate, seconds) {
  const c = client()
  if (kind.startsWith('ours')) {
    await c.opened
  } else {
    await c.synced
    if (c.size() < FIELDS) c.seed()
  }
  out({ ready: true })
  await nextLine() // go
  const n = Math.round(rate * seconds)
  const interval = 1e9 / rate
  const t0 = Number(now())
  let i = 0
  await new Promise(resolve => {
    const tick = () => {
      const due = () => t0 + i * interval
      while (i < n && Number(now()) >= due()) { c.set(field(i % FIELDS), value()); i++ }
      if (i >= n) return resolve()
      setTimeout(tick, Math.max(0, (due() - Number(now())) / 1e6))
    }
    tick()
  })
  // Let outstanding acks arrive (ours), then report.
  const end = Date.now() + 10000
  while (c.acks && c.acks.length < n && Date.now() < end) await new Promise(resolve => setTimeout(resolve, 20))
  out({ sent: n, seconds: (Number(now()) - t0) / 1e9, acks: c.acks || [] })
  await nextLine()
  c.close()
  process.exit(0)
}

async function subs (count) {
  const lat = []
  const got = new Array(count).fill(0)
  const cs = []
  for (let s = 0; s < count; s++) {
    const c = client()
    c.onValue(v => {
      if (!counting || typeof v !== 'string' || v.length !== 40) return
      lat.push(Number(now() - BigInt(v)) / 1e3)
      got[s]++
    })
    cs.push(c)
    // Connect in small batches so the server is not flooded with handshakes.
    if (s % 50 === 49) await Promise.all(cs.slice(-50).map(c => c.synced))
  }
  await Promise.all(cs.map(c => c.synced))
  const short = cs.filter(c => c.size() < FIELDS).length
  if (short > 0) process.stderr.write(`${short} subscribers synced before the document was seeded\n`)
  out({ ready: true })
  await nextLine() // go
  counting = true
  const want = Number(await nextLine()) // updates sent
  const end = Date.now() + 15000
  while (got.some(g => g < want) && Date.now() < end) await new Promise(resolve => setTimeout(resolve, 20))
  counting = false
  out({ lat, bytes, received: got.reduce((a, b) => a + b, 0), missing: got.reduce((a, g) => a + Math.max(0, want - g), 0) })
  await nextLine()
  for (const c of cs) c.close()
  process.exit(0)
}

if (role === 'writer') await writer(Number(a1), Number(a2))
else await subs(Number(a1))
