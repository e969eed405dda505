// Text fields against Yjs on the same traces (docs/benchmarks.md, "Text
// fields against Yjs"). Run by `make bench` (TestTextBench in app/web/webtest_test.go
// starts a replica and passes AUTOGLM_URL); prints a table and writes JSON
// to the file named by TEXTBENCH_OUT.
//
//   1. bytes on the wire per typed character (one keystroke = one update)
//   2. apply cost per remote single-character op on a 100 KB text
//   3. size of a document after 10,000 edits, before and after compaction
//   4. convergence of 5 typists at 10 keystrokes/s each, over the network
import { writeFileSync } from 'node:fs'
import { performance } from 'node:perf_hooks'
import { WebSocketServer, WebSocket } from 'ws'
import * as Y from 'yjs'
import { applyOps, insertOp, deleteOp, Text, encodeFrames, connect, memoryStorage } from '../client.js'

const URL = process.env.AUTOGLM_URL
const OUT = process.env.TEXTBENCH_OUT
const QUICK = !!process.env.TEXTBENCH_QUICK

// A seeded PRNG (mulberry32), so both systems see the same trace.
function rng (seed) {
  return () => {
    seed |= 0; seed = seed + 0x6D2B79F5 | 0
    let t = Math.imul(seed ^ seed >>> 15, 1 | seed)
    t = t + Math.imul(t ^ t >>> 7, 61 | t) ^ t
    return ((t ^ t >>> 14) >>> 0) / 4294967296
  }
}
const letters = 'abcdefghijklmnopqrstuvwxyz     '
const results = {}
const median = xs => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] }
const p95 = xs => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length * 0.95)] }

// A trace: edits as [author, kind, pos, text|count], positions in the text
// as it is when the edit is made (one replica applies them in order).
function trace ({ seed, edits, authors, delShare, burst = 1, start = 0 }) {
  const r = rng(seed)
  const out = []
  let len = start
  for (let i = 0; i < edits; i++) {
    const a = Math.floor(r() * authors)
    if (len > 0 && r() < delShare) {
      const pos = Math.floor(r() * len); const n = Math.min(1 + Math.floor(r() * 3), len - pos)
      out.push([a, 'del', pos, n]); len -= n
    } else {
      const pos = Math.floor(r() * (len + 1))
      let s = ''
      for (let k = 0; k < burst; k++) s += letters[Math.floor(r() * letters.length)]
      out.push([a, 'ins', pos, s]); len += s.length
    }
  }
  return out
}

const site = a => `c-${(a * 2654435761 >>> 0).toString(36).padStart(7, '0').slice(0, 7)}x` // 9-character client ids

// Ours: applies a trace to a client copy, returning the ops.
function oursRun (data, tr, path = 'notes') {
  const ops = []
  for (const [a, kind, pos, x] of tr) {
    const op = kind === 'ins' ? insertOp(data, path, site(a), pos, x) : deleteOp(data, path, pos, x)
    if (!op) continue
    applyOps(data, [op])
    ops.push(op)
  }
  return ops
}

// Yjs: one Y.Doc per author would be the real setting; for the trace's
// shape one doc with a clientID per author is the same structure.
function yjsRun (doc, tr, onUpdate) {
  const ytext = doc.getText('notes')
  const h = onUpdate && ((u) => onUpdate(u))
  if (h) doc.on('update', h)
  for (const [a, kind, pos, x] of tr) {
    doc.clientID = 1000 + a
    if (kind === 'ins') ytext.insert(pos, x)
    else ytext.delete(pos, x)
  }
  if (h) doc.off('update', h)
  return ytext
}

// ---- 1. bytes per typed character --------------------------------------

{
  const tr = trace({ seed: 1, edits: QUICK ? 300 : 2000, authors: 1, delShare: 0.05 })
  const data = {}
  let json = 0; let bin = 0; let djson = 0; let dbin = 0; let value = 0
  let v = 0; const wall = 1764096000000
  const client = site(0)
  for (const [a, kind, pos, x] of tr) {
    const op = kind === 'ins' ? insertOp(data, 'notes', site(a), pos, x) : deleteOp(data, 'notes', pos, x)
    if (!op) continue
    applyOps(data, [op])
    v++
    const hlc = `${wall + v * 100}.0.${client}`
    const msg = { t: 'op', doc: 'forms/demo', op: v, base: v - 1, hlc, ops: [op] }
    const delta = { t: 'delta', doc: 'forms/demo', v, pv: v - 1, op: v, hlc, ops: [op], by: client }
    json += JSON.stringify(msg).length; bin += encodeFrames(msg).length
    djson += JSON.stringify(delta).length; dbin += encodeFrames(delta).length
    value += JSON.stringify(op).length
  }
  let ybytes = 0; let yn = 0
  const ydoc = new Y.Doc()
  yjsRun(ydoc, tr, u => { ybytes += u.length; yn++ })
  if (ydoc.getText('notes').toString() !== data.notes) throw new Error('trace 1: Yjs and ours disagree')
  results.wire = {
    keystrokes: v,
    ours: { op_json: json / v, op_binary: bin / v, delta_json: djson / v, delta_binary: dbin / v, field_op_json: value / v },
    yjs: { update: ybytes / yn }
  }
}

// ---- 2. apply cost on a 100 KB text -------------------------------------

{
  // 100 KB written in bursts of 50 characters at random places by 5 people.
  const base = trace({ seed: 2, edits: QUICK ? 200 : 2000, authors: 5, delShare: 0, burst: 50 })
  const ops = trace({ seed: 3, edits: 1000, authors: 1, delShare: 0.3, start: QUICK ? 10000 : 100000 }).map(e => [e[0] + 5, ...e.slice(1)])
  const src = {}
  oursRun(src, base)
  const start = structuredClone(src)
  const remote = oursRun(src, ops)
  const dst = structuredClone(start)
  let t0 = performance.now()
  for (const op of remote) applyOps(dst, [op])
  const ours = (performance.now() - t0) / remote.length
  if (dst.notes !== src.notes) throw new Error('trace 2: replay differs')

  const ydoc = new Y.Doc()
  yjsRun(ydoc, base)
  const ystart = Y.encodeStateAsUpdate(ydoc)
  const updates = []
  yjsRun(ydoc, ops, u => updates.push(u))
  const ydst = new Y.Doc()
  Y.applyUpdate(ydst, ystart)
  t0 = performance.now()
  for (const u of updates) Y.applyUpdate(ydst, u)
  const yjs = (performance.now() - t0) / updates.length
  if (ydst.getText('notes').toString() !== src.notes) throw new Error('trace 2: Yjs and ours disagree')
  const t = Text.of(start, 'notes')
  results.apply100k = { text_chars: t.length, runs: t.runs.length, ops: remote.length, ours_client_ms: ours, yjs_ms: yjs }
}

// ---- 3. size after 10,000 edits, before and after compaction ------------

{
  const tr = trace({ seed: 4, edits: QUICK ? 2000 : 10000, authors: 5, delShare: 0.3 })
  const heap = () => { globalThis.gc?.(); return process.memoryUsage().heapUsed }
  let h0 = heap()
  const data = {}
  oursRun(data, tr)
  const oursHeap = heap() - h0
  const before = JSON.stringify(data).length
  // Compaction: the server's CollectText drops the tombstone runs.
  const t = Text.of(data, 'notes')
  const live = t.runs.filter(r => !r.del)
  const tomb = t.runs.length - live.length
  t.runs = live; t._normalize()
  const after = JSON.stringify({ notes: t.toString(), _text: { notes: t.meta() } }).length
  h0 = heap()
  const ydoc = new Y.Doc({ gc: false })
  yjsRun(ydoc, tr)
  const yHeap = heap() - h0
  const ybefore = Y.encodeStateAsUpdate(ydoc).length
  const ygc = new Y.Doc()
  yjsRun(ygc, tr)
  const yafter = Y.encodeStateAsUpdate(ygc).length
  if (ygc.getText('notes').toString() !== data.notes) throw new Error('trace 3: Yjs and ours disagree')
  results.size10k = {
    edits: tr.length, visible_chars: [...data.notes].length,
    ours: { bytes_before: before, bytes_after: after, runs_before: live.length + tomb, runs_after: t.runs.length, heap_bytes: oursHeap },
    yjs: { bytes_gc_off: ybefore, bytes_gc_on: yafter, heap_bytes_gc_off: yHeap }
  }
}

// ---- 4. convergence of 5 typists at 10 keystrokes/s ----------------------

const TYPISTS = 5; const RATE = 10; const SECONDS = QUICK ? 3 : 10

async function typists (name, make) {
  const r = rng(5)
  const peers = await make()
  const t0 = performance.now()
  // Each typist types at its own place: the end of its own line.
  await Promise.all(peers.map(async (p, i) => {
    for (let k = 0; k < RATE * SECONDS; k++) {
      await new Promise(resolve => setTimeout(resolve, 1000 / RATE))
      const ch = letters[Math.floor(r() * 26)]
      p.type(ch)
    }
  }))
  const lastKey = performance.now()
  const want = TYPISTS * RATE * SECONDS
  for (;;) {
    const vs = peers.map(p => p.value())
    if (vs.every(v => v === vs[0]) && [...vs[0]].length >= want) break
    if (performance.now() - lastKey > 60000) throw new Error(`${name}: no convergence within 60 s`)
    await new Promise(resolve => setTimeout(resolve, 5))
  }
  const converged = performance.now() - lastKey
  await Promise.all(peers.map(p => p.close()))
  return { typists: TYPISTS, keystrokes: want, seconds: (lastKey - t0) / 1000, converge_ms_after_last_key: converged }
}

async function ours () {
  const doc = 'forms/textbench-' + Math.random().toString(36).slice(2, 8)
  return Promise.all([...Array(TYPISTS).keys()].map(async i => {
    const sync = connect(URL, { WebSocket, storage: memoryStorage(), clientId: site(i), roles: ['editor'] })
    const d = sync.doc(doc)
    await d.ready
    const text = d.text('notes')
    // Each typist's own line: a marker, typed once, then keystrokes after it.
    let mine = null
    return {
      type (ch) {
        const v = text.value
        if (mine === null) { text.insert([...v].length, `\n${i}:`); mine = Text.of(d.state, 'notes').idAt([...text.value].length - 1) }
        const t = Text.of(d.state, 'notes')
        let pos = t.caret(mine)
        // After this typist's own characters: walk to the end of its run.
        const s = [...t.toString()]
        while (pos < s.length && s[pos] !== '\n') pos++
        text.insert(pos, ch)
      },
      value: () => text.value.replace(/\n\d:/g, ''),
      close: async () => sync.close()
    }
  }))
}

async function yjs () {
  // y-websocket's core in a few lines: a relay that forwards every update
  // to the other connections, each client a Y.Doc on a real WebSocket.
  const wss = new WebSocketServer({ port: 0 })
  wss.on('connection', ws => ws.on('message', m => { for (const c of wss.clients) if (c !== ws && c.readyState === 1) c.send(m) }))
  await new Promise(resolve => wss.once('listening', resolve))
  const port = wss.address().port
  const peers = await Promise.all([...Array(TYPISTS).keys()].map(async i => {
    const doc = new Y.Doc()
    const ws = new WebSocket(`ws://127.0.0.1:${port}`)
    await new Promise(resolve => ws.once('open', resolve))
    doc.on('update', (u, origin) => { if (origin !== 'remote') ws.send(u) })
    ws.on('message', m => Y.applyUpdate(doc, new Uint8Array(m), 'remote'))
    const ytext = doc.getText('notes')
    let mine = null
    return {
      type (ch) {
        if (mine === null) { ytext.insert(ytext.length, `\n${i}:`); mine = Y.createRelativePositionFromTypeIndex(ytext, ytext.length - 1) }
        let pos = Y.createAbsolutePositionFromRelativePosition(mine, doc).index + 1
        const s = ytext.toString()
        while (pos < s.length && s[pos] !== '\n') pos++
        ytext.insert(pos, ch)
      },
      value: () => ytext.toString().replace(/\n\d:/g, ''),
      close: async () => ws.close()
    }
  }))
  const close = peers.map(p => p.close)
  peers.forEach((p, i) => { p.close = async () => { await close[i](); if (i === 0) wss.close() } })
  return peers
}

if (URL) {
  results.typists = { ours: await typists('ours', ours), yjs: await typists('yjs', yjs) }
}

// ---- report -----------------------------------------------------------------

const f = (x, d = 1) => typeof x === 'number' ? x.toFixed(d) : String(x)
const w = results.wire; const a = results.apply100k; const s = results.size10k
console.log(`# 1. wire per keystroke (${w.keystrokes} keystrokes): ours op ${f(w.ours.op_json)} B JSON / ${f(w.ours.op_binary)} B binary, delta ${f(w.ours.delta_json)} B JSON / ${f(w.ours.delta_binary)} B binary (field op alone ${f(w.ours.field_op_json)} B JSON); Yjs update ${f(w.yjs.update)} B`)
console.log(`# 2. apply per remote op on ${a.text_chars} characters (${a.runs} runs): ours (JS client) ${f(a.ours_client_ms, 3)} ms, Yjs ${f(a.yjs_ms, 3)} ms`)
console.log(`# 3. after ${s.edits} edits (${s.visible_chars} visible): ours ${s.ours.bytes_before} B (${s.ours.runs_before} runs) → ${s.ours.bytes_after} B after compaction (${s.ours.runs_after} runs), heap ${s.ours.heap_bytes} B; Yjs ${s.yjs.bytes_gc_off} B gc off → ${s.yjs.bytes_gc_on} B gc on, heap ${s.yjs.heap_bytes_gc_off} B`)
if (results.typists) {
  for (const k of ['ours', 'yjs']) {
    const t = results.typists[k]
    console.log(`# 4. ${k}: ${t.typists} typists × ${RATE}/s for ${f(t.seconds)} s (${t.keystrokes} keystrokes): converged ${f(t.converge_ms_after_last_key, 0)} ms after the last keystroke`)
  }
}
if (OUT) writeFileSync(OUT, JSON.stringify(results, null, 2) + '\n')
