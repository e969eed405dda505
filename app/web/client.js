// Open-AutoGLM JavaScript client: real-time document sync over WebSocket
// (JSON or binary frames), Server-Sent Events + POST, or long-polling, with
// an optimistic local state, a durable offline queue shared by the tabs of a
// browser profile, and reconnect with capped backoff. No dependencies; runs
// in browsers and Node 20+.
// Usage: docs/client.md. Wire protocol: docs/protocol.md.

const PROTO = 2
const SUB_JSON = 'autoglm.json.v1'
const SUB_BIN = 'autoglm.bin.v1'
const RETRYABLE = new Set(['rate_limited', 'unavailable', 'shutting_down', 'internal'])

// ---- small helpers ---------------------------------------------------------

const clone = v => v === undefined ? v : JSON.parse(JSON.stringify(v))
const isObj = v => v !== null && typeof v === 'object' && !Array.isArray(v)
const randomId = () => 'c-' + Math.random().toString(36).slice(2, 10) + Math.random().toString(36).slice(2, 6)
const randomHex = bytes => Array.from({ length: bytes * 2 }, () => Math.floor(Math.random() * 16).toString(16)).join('')
const TRACEPARENT = /^00-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/

// canon renders JSON with object keys sorted (the form sets compare by, and
// the binary encoding's data/details fields).
export const canon = v => Array.isArray(v)
  ? '[' + v.map(canon).join(',') + ']'
  : isObj(v)
    ? '{' + Object.keys(v).filter(k => v[k] !== undefined).sort().map(k => JSON.stringify(k) + ':' + canon(v[k])).join(',') + '}'
    : JSON.stringify(v)

// Document data is plain JSON objects. Fields are own properties only: a
// field named toString, constructor or __proto__ is an ordinary field, never
// a member of Object.prototype, exactly as on the server.
const own = (m, k) => isObj(m) && Object.hasOwn(m, k) ? m[k] : undefined
const put = (m, k, v) => {
  if (Object.hasOwn(m, k)) m[k] = v
  else Object.defineProperty(m, k, { value: v, writable: true, enumerable: true, configurable: true })
}

/** Value at a dot path of an object (undefined when missing). */
export function getPath (data, path) {
  let v = data
  for (const k of path.split('.')) v = own(v, k)
  return v
}

// writePath sets (or, with del, removes) the value at a path, creating
// missing objects on the way and replacing non-objects; a removal below a
// missing object does nothing. undo sees the one key the write changes.
function writePath (data, segs, value, del, undo) {
  let m = data
  for (const k of segs.slice(0, -1)) {
    if (!isObj(own(m, k))) {
      if (del) return
      undo(m, k)
      put(m, k, {})
    }
    m = m[k]
  }
  const leaf = segs[segs.length - 1]
  if (del && !Object.hasOwn(m, leaf)) return
  undo(m, leaf)
  if (del) delete m[leaf]
  else put(m, leaf, value)
}

// ---- text fields (docs/conflicts.md, "Text fields") ------------------------
//
// The same RGA as the server's (app/merge/text.go): a text field's string is
// in the data, its metadata under `_text` (path → {s: sites, m: highest clock
// per site, r: runs of [site index, first clock, length], negative for
// deleted runs}). Positions count Unicode code points.

const TEXT = '_text'
const MAX_CLOCK = Number.MAX_SAFE_INTEGER
// Sites compare as the server compares them: by UTF-8 bytes.
const siteCmp = (a, b) => {
  const x = utf8.encode(a); const y = utf8.encode(b)
  for (let i = 0; i < x.length && i < y.length; i++) if (x[i] !== y[i]) return x[i] - y[i]
  return x.length - y.length
}
// diff returns where two strings differ, in code points: [index, how many
// of a's characters are replaced, b's characters there].
const diff = (a, b) => {
  a = [...a]; b = [...b]
  let i = 0; let j = 0
  while (i < a.length && i < b.length && a[i] === b[i]) i++
  while (j < a.length - i && j < b.length - i && a[a.length - 1 - j] === b[b.length - 1 - j]) j++
  return [i, a.length - i - j, b.slice(i, b.length - j).join('')]
}
const idAfter = (a, b) => a.clock > b.clock || (a.clock === b.clock && siteCmp(a.site, b.site) > 0)

/** The sequence CRDT of one text field (a copy: edits go through Doc.text). */
export class Text {
  constructor () { Object.assign(this, { sites: [], index: new Map(), max: [], runs: [] }) }

  /** Rebuilds the text at path of data (a plain string: ids ""@1, ""@2, …). */
  static of (data, path) {
    return Text.from(getPath(data, path), own(own(data, TEXT), path))
  }

  static from (v, meta) {
    if (v != null && typeof v !== 'string') throw new TypeError('field is not text')
    const t = new Text()
    const cs = [...(v || '')]
    if (meta === undefined) {
      if (cs.length) { t._site(''); t.max[0] = cs.length; t.runs.push({ site: 0, clock: 1, n: cs.length, del: false, s: cs }) }
      return t
    }
    const { s, m, r } = meta
    s.forEach((name, i) => { t.index.set(name, i); t.sites.push(name); t.max.push(m[i]) })
    let at = 0
    for (let i = 0; i < r.length; i += 3) {
      const run = { site: r[i], clock: r[i + 1], n: Math.abs(r[i + 2]), del: r[i + 2] < 0, s: null }
      if (!run.del) { run.s = cs.slice(at, at + run.n); at += run.n }
      t.runs.push(run)
    }
    if (at !== cs.length) throw new TypeError('text metadata does not match the text')
    return t
  }

  toString () { let out = ''; for (const r of this.runs) if (!r.del) out += r.s.join(''); return out }
  get length () { let n = 0; for (const r of this.runs) if (!r.del) n += r.n; return n }
  maxClock () { return this.max.reduce((a, b) => Math.max(a, b), 0) }
  siteMax (site) { const i = this.index.get(site); return i === undefined ? 0 : this.max[i] }

  _site (name) {
    let i = this.index.get(name)
    if (i === undefined) { i = this.sites.length; this.index.set(name, i); this.sites.push(name); this.max.push(0) }
    return i
  }

  _id (i, off) { return { site: this.sites[this.runs[i].site], clock: this.runs[i].clock + off } }

  _locate (id) {
    const si = this.index.get(id.site)
    if (si === undefined) return null
    for (let i = 0; i < this.runs.length; i++) {
      const r = this.runs[i]
      if (r.site === si && id.clock >= r.clock && id.clock < r.clock + r.n) return [i, id.clock - r.clock]
    }
    return null
  }

  _split (i, off) {
    const r = this.runs[i]
    const b = { ...r, clock: r.clock + off, n: r.n - off, s: r.del ? null : r.s.slice(off) }
    this.runs[i] = { ...r, n: off, s: r.del ? null : r.s.slice(0, off) }
    this.runs.splice(i + 1, 0, b)
  }

  /** Id ({site, clock}) of the visible character at pos, or null. */
  idAt (pos) {
    for (let i = 0; i < this.runs.length; i++) {
      const r = this.runs[i]
      if (r.del) continue
      if (pos < r.n) return this._id(i, pos)
      pos -= r.n
    }
    return null
  }

  /** Caret position right after id (0 for null, the start; before the next visible character when id is deleted); -1: unknown. */
  caret (id) {
    const at = id ? this._locate(id) : [0, -1]
    if (!at) return -1
    let p = 0
    for (let i = 0; i < at[0]; i++) if (!this.runs[i].del) p += this.runs[i].n
    return id && !this.runs[at[0]].del ? p + at[1] + 1 : p
  }

  /** Places text with ids site@clock… after anchor (null: the start); returns the anchor it lands right after. */
  insert (site, clock, anchor, text, causal = true) {
    const cs = [...text]
    if (!cs.length || !(clock >= 1) || clock + cs.length - 1 > MAX_CLOCK || clock <= this.siteMax(site)) throw new RangeError('bad text id')
    const me = { site, clock }
    let idx = this.runs.length
    if (!anchor) idx = 0
    else {
      const at = this._locate(anchor)
      if (at) {
        if (causal && !idAfter(me, anchor)) throw new RangeError('bad text id')
        if (at[1] < this.runs[at[0]].n - 1) this._split(at[0], at[1] + 1)
        idx = at[0] + 1
      }
    }
    while (idx < this.runs.length && idAfter(this._id(idx, 0), me)) idx++
    const si = this._site(site)
    this.max[si] = clock + cs.length - 1
    const resolved = idx > 0 ? this._id(idx - 1, this.runs[idx - 1].n - 1) : null
    this.runs.splice(idx, 0, { site: si, clock, n: cs.length, del: false, s: cs })
    this._normalize()
    return resolved
  }

  /** Deletes the live characters of ranges [{site, clock, n}]; returns the ranges it deleted. */
  delete (ranges) {
    const out = []
    for (const rg of ranges) {
      const si = this.index.get(rg.site)
      if (si === undefined || !(rg.n > 0)) continue
      const lo = rg.clock; const hi = rg.clock + rg.n - 1
      for (let i = 0; i < this.runs.length; i++) {
        let r = this.runs[i]
        if (r.site !== si || r.del || r.clock + r.n - 1 < lo || r.clock > hi) continue
        if (r.clock < lo) { this._split(i, lo - r.clock); continue }
        if (r.clock + r.n - 1 > hi) { this._split(i, hi - r.clock + 1); r = this.runs[i] }
        this.runs[i] = { ...r, del: true, s: null }
        appendRange(out, { site: rg.site, clock: r.clock, n: r.n })
      }
    }
    this._normalize()
    return out
  }

  /** Ranges of count visible characters from pos. */
  live (pos, count) {
    const out = []
    for (let i = 0; i < this.runs.length && count > 0; i++) {
      const r = this.runs[i]
      if (r.del) continue
      if (pos >= r.n) { pos -= r.n; continue }
      const n = Math.min(r.n - pos, count)
      const id = this._id(i, pos)
      appendRange(out, { site: id.site, clock: id.clock, n })
      count -= n
      pos = 0
    }
    return out
  }

  _normalize () {
    const out = []
    for (const r of this.runs) {
      const l = out[out.length - 1]
      if (l && l.site === r.site && l.del === r.del && l.clock + l.n === r.clock) {
        out[out.length - 1] = { ...l, n: l.n + r.n, s: l.del ? null : l.s.concat(r.s) }
      } else out.push(r)
    }
    this.runs = out
  }

  meta () {
    const r = []
    for (const run of this.runs) r.push(run.site, run.clock, run.del ? -run.n : run.n)
    return { s: [...this.sites], m: [...this.max], r }
  }
}

function appendRange (out, rg) {
  const l = out[out.length - 1]
  if (l && l.site === rg.site && l.clock + l.n === rg.clock) l.n += rg.n
  else out.push(rg)
}

const anchorOf = (a, site) => a === '' ? null : typeof a === 'number' ? { site, clock: a } : { site: a.slice(0, a.lastIndexOf('@')), clock: +a.slice(a.lastIndexOf('@') + 1) }
const anchorValue = (a, site) => !a ? '' : a.site === site ? a.clock : `${a.site}@${a.clock}`
const delValue = ranges => {
  const out = []
  ranges.forEach((r, i) => { if (!i || r.site !== ranges[i - 1].site) out.push(r.site); out.push(r.clock, r.n) })
  return out
}
const delRanges = v => {
  const out = []; let site = ''
  for (let i = 0; i < v.length;) {
    if (typeof v[i] === 'string') { site = v[i++]; continue }
    out.push({ site, clock: v[i], n: v[i + 1] }); i += 2
  }
  return out
}

function storeText (data, path, t, undo) {
  writePath(data, path.split('.'), t.toString(), false, undo)
  if (!isObj(own(data, TEXT))) writePath(data, [TEXT], {}, false, undo)
  undo(data[TEXT], path)
  put(data[TEXT], path, t.meta())
}

// dropText forgets the metadata of texts a write of path replaces (at or
// below it, or above it), as the server does.
function dropText (data, path, undo) {
  const all = own(data, TEXT)
  if (!isObj(all) || path === TEXT) return
  const under = (k, p) => k === p || k.startsWith(p + '.')
  for (const k of Object.keys(all)) if (under(k, path) || under(path, k)) { undo(all, k); delete all[k] }
  if (!Object.keys(all).length) writePath(data, [TEXT], undefined, true, undo)
}

// applyTextOp applies an ins or del as merge.ApplyPlain does (a positional
// insert takes the site ""); an op that does not fit is invalid_op.
function applyTextOp (data, o, undo) {
  let t
  try {
    t = Text.of(data, o.path)
    const v = o.value
    if (o.op === 'ins') {
      if (v.length === 2) {
        const pos = Math.min(v[0], t.length)
        t.insert('', t.maxClock() + 1, pos > 0 ? t.idAt(pos - 1) : null, v[1], false)
      } else if (v.length === 4) t.insert(v[0], v[1], anchorOf(v[2], v[0]), v[3], false)
      else throw new RangeError('bad value')
    } else if (!t.delete(typeof v[0] === 'string' ? delRanges(v) : t.live(v[0], v[1])).length) return
  } catch (e) { throw invalidOp(o, e.message) }
  storeText(data, o.path, t, undo)
}

/** The ins op inserting text at pos of the text at path in data, as site. */
export function insertOp (data, path, site, pos, text) {
  const t = Text.of(data, path)
  pos = Math.max(0, Math.min(pos, t.length))
  return { op: 'ins', path, value: [site, t.maxClock() + 1, anchorValue(pos > 0 ? t.idAt(pos - 1) : null, site), text] }
}

/** The del op deleting count characters from pos of the text at path (null: nothing to delete). */
export function deleteOp (data, path, pos, count) {
  const rs = Text.of(data, path).live(Math.max(0, pos), count)
  return rs.length ? { op: 'del', path, value: delValue(rs) } : null
}

// goCanon is the canonical JSON the server orders and compares set elements
// by (Go's encoding/json: keys sorted, <, >, & and U+2028/9 escaped).
const goText = s => JSON.stringify(s).replace(/[<>&\u2028\u2029]/g, c => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'))
const goCanon = v => Array.isArray(v)
  ? '[' + v.map(goCanon).join(',') + ']'
  : isObj(v)
    ? '{' + Object.keys(v).sort(byCodePoint).map(k => goText(k) + ':' + goCanon(v[k])).join(',') + '}'
    : typeof v === 'string' ? goText(v) : JSON.stringify(v)

// byCodePoint orders strings by code point (the server's byte order of
// UTF-8), not by UTF-16 unit: a surrogate stands for a code point above
// every other unit.
function byCodePoint (a, b) {
  for (let i = 0; i < a.length && i < b.length; i++) {
    const x = a.charCodeAt(i); const y = b.charCodeAt(i)
    if (x === y) continue
    const sx = x >= 0xd800 && x <= 0xdfff; const sy = y >= 0xd800 && y <= 0xdfff
    return sx !== sy ? (sx ? 1 : -1) : x - y
  }
  return a.length - b.length
}

const NAME = /^[a-z][a-z0-9_-]{0,63}\/[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$/

/**
 * Throws an Error with code 'invalid_name' unless name is "collection/id"
 * as the server accepts it (docs/protocol.md).
 */
export function checkName (name) {
  if (typeof name !== 'string' || !NAME.test(name) || name.includes('..')) {
    throw Object.assign(new Error(`document name ${JSON.stringify(name)}: want collection/id, collection [a-z][a-z0-9_-]{0,63}, id [A-Za-z0-9][A-Za-z0-9_.@-]{0,127}`), { code: 'invalid_name' })
  }
  return name
}

const invalidOp = (o, why) => Object.assign(new Error(`${o.op} ${JSON.stringify(o.path)}: ${why}`), { code: 'invalid_op' })

// checkOp refuses what the server's ValidateEffective refuses.
function checkOp (o) {
  const segs = typeof o.path === 'string' ? o.path.split('.') : ['']
  if (segs.includes('')) throw invalidOp(o, 'empty key in the path')
  if (segs.length > 16) throw invalidOp(o, 'path deeper than 16 keys')
  switch (o.op) {
    case 'set': case 'add': case 'remove':
      if (o.value === undefined) throw invalidOp(o, 'needs a value')
      break
    case 'unset':
      if (o.value !== undefined) throw invalidOp(o, 'takes no value')
      break
    case 'inc':
      if (o.value !== null && !(typeof o.value === 'number' && Number.isFinite(o.value))) throw invalidOp(o, 'needs a number')
      break
    case 'resolve': break
    case 'ins': case 'del':
      if (!Array.isArray(o.value) || !o.value.length) throw invalidOp(o, 'needs an array')
      break
    default: throw invalidOp(o, 'unknown op')
  }
  return segs
}

/**
 * Applies field ops to plain data in place, as the server's copy does
 * (Go merge.ApplyPlain; both pass app/merge/testdata/apply_vectors.json).
 * An op the server would refuse throws an Error with code 'invalid_op' and
 * leaves data as it was.
 */
export function applyOps (data, ops) {
  const log = []
  const undo = (m, k) => log.push([m, k, Object.hasOwn(m, k), m[k]])
  try {
    for (const o of ops || []) applyOp(data, o, checkOp(o), undo)
  } catch (err) {
    for (const [m, k, had, v] of log.reverse()) {
      if (had) put(m, k, v)
      else delete m[k]
    }
    throw err
  }
  return data
}

function applyOp (data, o, segs, undo) {
  if (o.op === 'ins' || o.op === 'del') return applyTextOp(data, o, undo)
  dropText(data, o.path, undo)
  const cur = getPath(data, o.path)
  switch (o.op) {
    case 'set': return writePath(data, segs, clone(o.value), false, undo)
    case 'unset': return writePath(data, segs, undefined, true, undo)
    case 'resolve': {
      writePath(data, segs, clone(o.value), o.value === undefined, undo)
      const c = own(data, '_conflicts')
      const gone = isObj(c) ? Object.keys(c).filter(k => k === o.path || k.startsWith(o.path + '.')) : []
      if (!gone.length) return
      const next = { ...c }
      for (const k of gone) delete next[k]
      return writePath(data, ['_conflicts'], next, !Object.keys(next).length, undo)
    }
    case 'inc': {
      if (cur !== undefined && cur !== null && typeof cur !== 'number') throw invalidOp(o, 'field is not a number')
      const sum = (cur ?? 0) + (o.value ?? 0)
      if (!Number.isFinite(sum)) throw invalidOp(o, 'overflows')
      return writePath(data, segs, sum, false, undo)
    }
    case 'add': case 'remove': {
      if (cur !== undefined && cur !== null && !Array.isArray(cur)) throw invalidOp(o, 'field is not a set')
      if (cur == null && o.op === 'remove') return
      const set = new Map()
      for (const e of [...(cur || []), ...(o.op === 'add' ? [clone(o.value)] : [])]) {
        const k = goCanon(e)
        if (!set.has(k)) set.set(k, e)
      }
      if (o.op === 'remove') set.delete(goCanon(o.value))
      return writePath(data, segs, [...set.keys()].sort(byCodePoint).map(k => set.get(k)), false, undo)
    }
  }
}

class Emitter {
  constructor () { this._h = {} }
  /** Subscribes to an event; returns the function that unsubscribes. */
  on (type, fn) {
    (this._h[type] ||= new Set()).add(fn)
    return () => this._h[type].delete(fn)
  }

  _emit (type, ...args) {
    for (const fn of this._h[type] || []) {
      try { fn(...args) } catch (e) { console.error(e) }
    }
  }
}

// ---- live queries ----------------------------------------------------------

// compareValues orders query values as the server does: missing < null <
// booleans < numbers < strings (by code point) < arrays and objects (by
// their canonical JSON).
const rankOf = v => v === undefined ? 0 : v === null ? 1 : { boolean: 2, number: 3, string: 4 }[typeof v] || 5

function compareValues (a, b) {
  const r = rankOf(a)
  return r - rankOf(b) || (r < 4 ? (a < b ? -1 : a > b ? 1 : 0) : r > 4 ? byCodePoint(canon(a), canon(b)) : byCodePoint(a, b))
}

/**
 * The order of a query's results: its order_by keys, then the id
 * ascending. orderBy is [[path, 'asc'|'desc'], …].
 */
function compareResults (orderBy = []) {
  return (x, y) => {
    for (const [path, dir] of orderBy) {
      const c = compareValues(getPath(x.data, path), getPath(y.data, path))
      if (c) return dir === 'desc' ? -c : c
    }
    return byCodePoint(x.id, y.id)
  }
}

/**
 * A live query (Sync.query): `results` holds the matching documents the
 * client may read, [{id, version, data}], in the query's order. Events:
 * added(item, change), changed(item, change), removed(item, change with
 * `why`), change(results, item) after each update, synced(results), error(m).
 */
export class Query extends Emitter {
  constructor (sync, collection, q, qid) {
    super()
    Object.assign(this, { sync, collection, query: q, qid, results: [], synced: false })
    this._items = new Map()
    this._cmp = compareResults(q.order_by)
    this.ready = new Promise(resolve => { this._ready = resolve })
  }

  /** Ends the query. */
  close () {
    this.sync._queries.delete(this.qid)
    this.sync._send({ t: 'unsub', qid: this.qid })
    this._closed = true
  }

  _sub () {
    const have = {}
    for (const it of this._items.values()) have[it.id] = it.version
    this.sync._send({ t: 'sub', coll: this.collection, qid: this.qid, query: this.query, have })
  }

  _msg (m) {
    if (m.t === 'error') return this._emit('error', m)
    if (m.t === 'synced') {
      this.synced = true
      this._ready(this.results)
      return this._emit('synced', this.results)
    }
    const id = (m.doc || '').slice(this.collection.length + 1)
    const held = this._items.get(id)
    const base = { doc: m.doc, version: m.v, ops: [] }
    let it = { id, version: m.v, data: m.data || {} }
    switch (m.t) {
      case 'snap': case 'added':
        this._items.set(id, it)
        this._emit(held ? 'changed' : 'added', it, { ...base, snapshot: true })
        break
      case 'delta': {
        if (held && m.v <= held.version) return
        if (!held || m.v !== held.version + 1) return this._sub() // a gap: resume from what is held
        this.sync._observe(m.hlc)
        it.data = m.new || m.del ? {} : clone(held.data)
        try { applyOps(it.data, m.ops || []) } catch { this._items.delete(id); return this._sub() }
        this._items.set(id, it)
        this._emit('changed', it, { ...base, ops: clone(m.ops || []), by: m.by, op: m.op, hlc: m.hlc, created: !!m.new, deleted: !!m.del, local: m.by === this.sync.clientId })
        break
      }
      case 'removed':
        if (!held) return
        this._items.delete(id)
        it = held
        this._emit('removed', held, { ...base, version: m.v ?? held.version, deleted: m.why === 'deleted', why: m.why })
        break
      default:
        return
    }
    this.results = [...this._items.values()].sort(this._cmp)
    this._emit('change', this.results, it)
  }
}

// ---- reconnect policy ------------------------------------------------------

/**
 * Delay before reconnect attempt n (0-based): "full jitter", uniformly random
 * in [0, min(max, base * 2^n)), so a fleet of clients does not reconnect in
 * step after an outage. The default cap is 5 s.
 */
export function backoffDelay (attempt, { base = 250, max = 5000 } = {}, random = Math.random) {
  return random() * Math.min(max, base * 2 ** Math.min(attempt, 30))
}

/**
 * Circuit breaker over overload signals of the server (close 4004/4005, HTTP
 * 429/5xx): closed → open after `threshold` consecutive ones; while open
 * nothing is tried until `cooldown` ms have passed; then half-open lets one
 * probe through: success closes it, failure opens it again. Plain
 * connection failures (server down, network gone) never trip it.
 */
export class Breaker {
  constructor ({ threshold = 5, cooldown = 15000, now = Date.now } = {}) {
    Object.assign(this, { threshold, cooldown, now, state: 'closed', failures: 0, openedAt: 0 })
  }

  /** Whether an attempt may be made now (moves open → half-open after the cool-down). */
  allow () {
    if (this.state === 'open' && this.now() - this.openedAt >= this.cooldown) this.state = 'half-open'
    return this.state !== 'open'
  }

  /** Milliseconds until allow() will let a probe through. */
  retryIn () {
    return this.state === 'open' ? Math.max(0, this.openedAt + this.cooldown - this.now()) : 0
  }

  success () {
    this.state = 'closed'
    this.failures = 0
  }

  failure () {
    this.failures++
    if (this.state === 'half-open' || this.failures >= this.threshold) {
      this.state = 'open'
      this.openedAt = this.now()
    }
  }
}

// ---- binary encoding (docs/client.md, "Binary encoding") -------------------

// ---- generated by `go generate ./app/protocol` from its tables (app/protocol/fields.go, binary.go); do not edit ----
// Message types by opcode; 0x3f: a type without one, named in field 0.
const TYPES = ['', 'hello', 'welcome', 'sub', 'unsub', 'op', 'snap', 'delta', 'synced', 'ack', 'reject', 'error', 'ping', 'pong', 'presence']
const NAMED = 0x3f
// Field op kinds by code; 0: the kind's name follows.
const KINDS = ['', 'set', 'unset', 'inc', 'add', 'remove', 'resolve', 'ins', 'del', 'set']
// [tag, name, layout, flag bit] of the fields with a tag, in tag order; the others travel in ext (tag 31).
const EXT = 31
const FIELDS = [
  [0, 't', 'type'],
  [1, 'client', 'str'],
  [2, 'token', 'str'],
  [3, 'session', 'str'],
  [4, 'node', 'str'],
  [5, 'hb', 'zigzag'],
  [6, 'proto', 'int32'],
  [7, 'doc', 'str'],
  [8, 'since', 'zigzag'],
  [9, 'v', 'zigzag'],
  [10, 'pv', 'prev'],
  [11, 'op', 'uvarint'],
  [12, 'base', 'zigzag'],
  [13, 'hlc', 'hlc'],
  [14, 'ops', 'ops'],
  [15, 'by', 'str'],
  [16, 'del', 'flag', 1],
  [16, 'new', 'flag', 2],
  [16, 'dup', 'flag', 4],
  [16, 'full', 'flag', 8],
  [17, 'data', 'object'],
  [18, 'code', 'str'],
  [19, 'msg', 'str'],
  [20, 'details', 'json'],
  [21, 'ts', 'zigzag'],
  [22, 'roles', 'strs'],
  [23, 'h', 'uvarint'],
  [24, 'a', 'uvarint'],
  [25, 'hlc', 'hlc_here']
]
// ---- end of generated code ----
const MORE = 0x80
// The rows of each tag (several: the flags), and the names with a tag.
const BY_TAG = FIELDS.reduce((t, f) => { (t[f[0]] ||= []).push(f); return t }, [])
const KNOWN = new Set(FIELDS.map(f => f[1]))
const CRC = new Uint8Array(256).map((_, i) => {
  for (let k = 0; k < 8; k++) i = i & 0x80 ? (i << 1 ^ 0x07) & 0xff : i << 1 & 0xff
  return i
})
const utf8 = new TextEncoder()
const fromUtf8 = new TextDecoder('utf-8', { fatal: true })

/** CRC-8/SMBUS (poly 0x07, init 0, no reflection, no final xor). */
export function crc8 (bytes) {
  let c = 0
  for (const b of bytes) c = CRC[c ^ b]
  return c
}

/** Error of the binary codec; `code` is one of the documented frame error codes. */
export class FrameError extends Error {
  constructor (code, msg) {
    super(`binary frame: ${code}: ${msg}`)
    this.code = code
  }
}

const defaultPV = (t, v) => (t === 'delta' || t === 'ack') && v > 0 ? v - 1 : 0

// expand restores what both encodings leave out of a server message: a
// delta's or ack's pv when it is v-1, an hlc's node when it is by, a single
// set written as set: {path: value}. The connection restores the rest of
// the compact forms (Sync._handle).
const expand = m => {
  if (m.pv === undefined && defaultPV(m.t, m.v || 0)) m.pv = defaultPV(m.t, m.v)
  if (m.by && /^\d+\.\d+$/.test(m.hlc)) m.hlc += '.' + m.by
  if (isObj(m.set)) {
    m.ops = Object.entries(m.set).map(([path, value]) => ({ op: 'set', path, value }))
    delete m.set
  }
  return m
}

/** Parses a message of the JSON encoding as the client reads it. */
export const decodeJSON = s => expand(JSON.parse(s))

// encodePayload walks the field table by tag, writing each field that is set.
function encodePayload (m) {
  const b = []
  const uv = n => {
    if (!Number.isSafeInteger(n) || n < 0) throw new FrameError('not_encodable', `bad integer ${n}`)
    for (; n >= 128; n = Math.floor(n / 128)) b.push(n % 128 + 128)
    b.push(n)
  }
  const zz = n => uv(n < 0 ? -2 * n - 1 : 2 * n)
  const bytes = u8 => { uv(u8.length); for (const x of u8) b.push(x) }
  const text = s => bytes(utf8.encode(s))
  BY_TAG.forEach(rows => {
    const [tag, name, wire] = rows[0]
    const v = m[name]
    switch (wire) {
      case 'type':
        if (TYPES.indexOf(v) > 0) return
        if (!v) throw new FrameError('not_encodable', 'message has no type')
        b.push(tag); text(v)
        return
      case 'prev': {
        const pv = v || 0
        if (pv !== defaultPV(m.t, m.v || 0)) { b.push(tag); zz(pv) }
        return
      }
      case 'flag': { // the tag's rows share one byte
        const flags = rows.reduce((f, [, k, , bit]) => m[k] ? f | bit : f, 0)
        if (flags) b.push(tag, flags)
        return
      }
      case 'hlc_here': return // the server's stamps only
    }
    if (wire === 'object' || wire === 'json' ? v == null : !v) return
    b.push(tag)
    switch (wire) {
      case 'str': text(v); break
      case 'zigzag': case 'int32': zz(v); break
      case 'uvarint': uv(v); break
      case 'hlc': {
        const [wall, logical, ...node] = v.split('.')
        uv(+wall); uv(+logical); text(m.by && node.join('.') === m.by ? '' : node.join('.'))
        break
      }
      case 'ops':
        uv(v.length)
        for (const o of v) {
          let k = KINDS.indexOf(o.op)
          const tv = k >= 7 && encodeTextValue(k, o.value)
          if (tv) { b.push(k); text(o.path); bytes(tv); continue }
          if (k >= 7) k = 0
          b.push(Math.max(k, 0))
          if (k < 1) text(o.op)
          text(o.path)
          text(o.value === undefined ? '' : JSON.stringify(o.value))
        }
        break
      case 'strs': uv(v.length); v.forEach(text); break
      default: text(canon(v)) // object, json
    }
  })
  const ext = {}
  let hasExt = false
  for (const k in m) if (!KNOWN.has(k) && m[k] !== undefined) { ext[k] = m[k]; hasExt = true }
  if (hasExt) { b.push(EXT); text(canon(ext)) }
  return Uint8Array.from(b)
}

// Text edits (ins 7, del 8) carry their values in a binary layout (docs/
// client.md, "Binary encoding") when it decodes to the same JSON; null: the
// op travels by name with its JSON value.
function encodeTextValue (k, v) {
  if (!Array.isArray(v) || !v.length) return null
  const b = []
  const uv = n => {
    if (!Number.isSafeInteger(n) || n < 0) throw new RangeError('not a count')
    for (; n >= 128; n = Math.floor(n / 128)) b.push(n % 128 + 128)
    b.push(n)
  }
  const str = s => {
    if (typeof s !== 'string' || /[\u2028\u2029]/.test(s)) throw new RangeError('not a plain string')
    const u = utf8.encode(s)
    uv(u.length)
    for (const x of u) b.push(x)
  }
  try {
    if (k === 7 && v.length === 2) { b.push(1); uv(v[0]); str(v[1]) } else if (k === 7 && v.length === 4) {
      b.push(0); str(v[0]); uv(v[1])
      const a = v[2]; const at = typeof a === 'string' ? a.lastIndexOf('@') : -1
      if (a === '') b.push(0)
      else if (typeof a === 'number') { b.push(1); uv(a) } else if (at >= 0 && /^\d+$/.test(a.slice(at + 1))) { b.push(2); str(a.slice(0, at)); uv(+a.slice(at + 1)) } else return null
      str(v[3])
    } else if (k === 8 && v.length === 2 && typeof v[0] !== 'string') { b.push(1); uv(v[0]); uv(v[1]) } else if (k === 8 && typeof v[0] === 'string') {
      const groups = []
      for (const x of v) typeof x === 'string' ? groups.push([x]) : groups[groups.length - 1].push(x)
      b.push(0); uv(groups.length)
      for (const g of groups) {
        if (g.length % 2 !== 1) return null
        str(g[0]); uv((g.length - 1) / 2); g.slice(1).forEach(uv)
      }
    } else return null
    const out = Uint8Array.from(b)
    return JSON.stringify(decodeTextValue(k, out)) === JSON.stringify(v) ? out : null
  } catch { return null }
}

function decodeTextValue (k, p) {
  const r = reader(p)
  const { bad, byte, uv, text: str } = r
  const form = byte()
  let out
  if (k === 7 && form === 0) {
    const site = str(); const clock = uv(); const a = byte()
    const anchor = a === 0 ? '' : a === 1 ? uv() : a === 2 ? str() + '@' + uv() : bad(`text anchor form ${a}`)
    out = [site, clock, anchor, str()]
  } else if (k === 7 && form === 1) out = [uv(), str()]
  else if (k === 8 && form === 0) {
    const groups = uv()
    if (!groups || groups > r.left()) bad(`${groups} delete groups`)
    out = []
    for (let g = 0; g < groups; g++) {
      out.push(str())
      const pairs = uv()
      if (pairs > r.left()) bad(`${pairs} delete ranges`)
      for (let j = 0; j < pairs; j++) out.push(uv(), uv())
    }
  } else if (k === 8 && form === 1) out = [uv(), uv()]
  else bad(`text op form ${form}`)
  if (r.left()) bad(`${r.left()} bytes after a text op`)
  return out
}

/** Encodes one message as binary frames (one WebSocket message). */
export function encodeFrames (m) {
  const p = encodePayload(m)
  const type = TYPES.indexOf(m.t) > 0 ? TYPES.indexOf(m.t) : NAMED
  const n = Math.max(1, Math.ceil(p.length / 255))
  const out = new Uint8Array(p.length + 3 * n)
  for (let i = 0, o = 0; i < n; i++) {
    const chunk = p.subarray(i * 255, i * 255 + 255)
    out[o] = (i ? 0 : type) | (i < n - 1 ? MORE : 0)
    out[o + 1] = chunk.length
    out.set(chunk, o + 2)
    out[o + 2 + chunk.length] = crc8(out.subarray(o, o + 2 + chunk.length))
    o += 3 + chunk.length
  }
  return out
}

/** Decodes every message of a buffer of binary frames; throws FrameError. */
export function decodeFrames (buf, max = 1 << 20) {
  const b = buf instanceof Uint8Array ? buf : new Uint8Array(buf)
  const out = []
  let parts = []; let size = 0; let type = 0; let open = false
  if (!b.length) throw new FrameError('truncated', 'no frames')
  for (let i = 0; i < b.length;) {
    const n = b[i + 1]
    if (b.length - i < 2 || b.length - i < 3 + n) throw new FrameError('truncated', `frame at byte ${i} is cut short`)
    const end = i + 2 + n
    if (crc8(b.subarray(i, end)) !== b[end]) throw new FrameError('bad_crc', `frame at byte ${i}`)
    const code = b[i] & 0x7f
    if (open ? code : !code || (code !== NAMED && !TYPES[code])) throw new FrameError('unknown_opcode', `opcode ${code} at byte ${i}`)
    if (!open) { type = code; parts = []; size = 0 }
    if (size + n > max) throw new FrameError('too_large', `message over ${max} bytes`)
    parts.push(b.subarray(i + 2, end))
    size += n
    open = !!(b[i] & MORE)
    i = end + 1
    if (!open) {
      const p = new Uint8Array(size)
      parts.reduce((o, part) => { p.set(part, o); return o + part.length }, 0)
      out.push(decodePayload(type, p))
    }
  }
  if (open) throw new FrameError('truncated', 'message ends without its last frame')
  return out
}

// reader reads a binary payload: bytes, varints, and length-prefixed bytes
// and text; every failure is bad_payload.
function reader (p) {
  const r = { i: 0, left: () => p.length - r.i, bad: msg => { throw new FrameError('bad_payload', msg) } }
  r.byte = () => r.i < p.length ? p[r.i++] : r.bad('payload ends early')
  r.uv = () => {
    let n = 0
    for (let mul = 1; ; mul *= 128) {
      if (r.i >= p.length) r.bad('bad varint')
      const x = p[r.i++]
      n += (x & 127) * mul
      if (n > Number.MAX_SAFE_INTEGER) r.bad('varint too large')
      if (x < 128) return n
    }
  }
  r.raw = () => {
    const n = r.uv()
    if (n > r.left()) r.bad(`length ${n} over the ${r.left()} bytes left`)
    return p.subarray(r.i, r.i += n)
  }
  r.text = () => { try { return fromUtf8.decode(r.raw()) } catch (e) { if (e instanceof FrameError) throw e; r.bad('string is not UTF-8') } }
  return r
}

// decodePayload reads each field by its rows of the field table.
function decodePayload (type, p) {
  const r = reader(p)
  const { bad, byte, uv, raw, text } = r
  const zz = () => { const n = uv(); return n % 2 ? -(n + 1) / 2 : n / 2 }
  const json = what => { const s = text(); try { return JSON.parse(s) } catch { bad(`${what} is not JSON`) } }
  const m = { t: type === NAMED ? undefined : TYPES[type] }
  let last = -1
  while (r.left()) {
    const tag = byte()
    if (tag <= last) bad(`field ${tag} after field ${last}`)
    last = tag
    if (tag === EXT) {
      const ext = json('ext')
      if (!isObj(ext)) bad('ext is not a JSON object')
      for (const k in ext) if (!KNOWN.has(k)) m[k] = ext[k]
      continue
    }
    const rows = BY_TAG[tag] || bad(`unknown field ${tag}`)
    const [, name, wire] = rows[0]
    let v
    switch (wire) {
      case 'type':
        if (type !== NAMED) bad('type field on a typed opcode')
        v = text()
        break
      case 'str': v = text(); break
      case 'uvarint': v = uv(); break
      case 'int32':
        v = zz()
        if (v > 2147483647 || v < -2147483648) bad(`${name} out of range`)
        break
      case 'zigzag': v = zz(); break
      case 'prev': m[name] = zz(); continue // an explicit pv of 0 differs from v-1
      case 'hlc': {
        const wall = uv(); const logical = uv(); const node = text()
        if (logical > 0xffffffff) bad('hlc out of range')
        if (wall || logical || node) v = `${wall}.${logical}` + (node && '.' + node)
        break
      }
      case 'hlc_here': { // an hlc of the server's node
        const wall = uv(); const logical = uv()
        if (logical > 0xffffffff || m[name]) bad('hlc out of range, or twice')
        v = `${wall}.${logical}.`
        break
      }
      case 'ops': {
        const n = uv()
        if (n > r.left() / 3) bad(`${n} ops in ${r.left()} bytes`)
        v = []
        for (let k = 0; k < n; k++) {
          const c = byte()
          const o = { op: c ? KINDS[c] : text(), path: '' }
          if (!o.op) bad(`op ${k}: unknown kind ${c}`)
          o.path = text()
          if (c === 9) {
            o.value = text()
            if (/["\\\u0000-\u001f\u2028\u2029]/.test(o.value)) bad(`op ${k}: string value needs escaping`)
          } else if (c === 7 || c === 8) o.value = decodeTextValue(c, raw())
          else {
            const s = text()
            if (s) try { o.value = JSON.parse(s) } catch { bad(`op ${k}: value is not JSON`) }
          }
          v.push(o)
        }
        m[name] = v
        continue
      }
      case 'flag': {
        const f = byte()
        if (f & ~rows.reduce((all, row) => all | row[3], 0)) bad(`unknown flags ${f}`)
        for (const [, k, , bit] of rows) if (f & bit) m[k] = true
        continue
      }
      case 'object':
        v = json(name)
        if (!isObj(v)) bad(`${name} is not a JSON object`)
        break
      case 'json': v = json(name); break
      case 'strs': {
        const n = uv()
        if (n > r.left()) bad(`${n} ${name} in ${r.left()} bytes`)
        v = []
        for (let k = 0; k < n; k++) v.push(text())
        if (!v.length) v = undefined
      }
    }
    if (wire === 'json' ? v !== null : v) m[name] = v
  }
  if (!m.t) bad('message has no type')
  return expand(m)
}

// ---- durable storage -------------------------------------------------------

/** In-memory storage (Node, tests): the queue lives as long as the process. */
export function memoryStorage () {
  const map = new Map()
  return {
    durable: false,
    load: async () => new Map(clone([...map])),
    put: async (k, v) => { map.set(k, clone(v)) },
    del: async k => { map.delete(k) }
  }
}

/** IndexedDB storage: queued edits and document copies survive reloads. */
export function indexedDBStorage (name, idb = globalThis.indexedDB) {
  const db = new Promise((resolve, reject) => {
    const r = idb.open(name, 1)
    r.onupgradeneeded = () => r.result.createObjectStore('kv')
    r.onsuccess = () => resolve(r.result)
    r.onerror = () => reject(r.error)
  })
  const tx = (mode, f) => db.then(d => new Promise((resolve, reject) => {
    const t = d.transaction('kv', mode)
    const req = f(t.objectStore('kv'))
    t.oncomplete = () => resolve(req.result)
    t.onerror = () => reject(t.error)
  }))
  return {
    durable: true,
    load: () => db.then(d => new Promise((resolve, reject) => {
      const s = d.transaction('kv').objectStore('kv')
      const keys = s.getAllKeys(); const vals = s.getAll()
      vals.onsuccess = () => resolve(new Map(keys.result.map((k, i) => [k, vals.result[i]])))
      vals.onerror = () => reject(vals.error)
    })),
    put: (k, v) => tx('readwrite', s => s.put(v, k)),
    del: k => tx('readwrite', s => s.delete(k)),
    /** Closes and deletes the database. */
    drop: () => db.then(d => new Promise((resolve, reject) => {
      d.close()
      const r = idb.deleteDatabase(name)
      r.onsuccess = r.onblocked = () => resolve()
      r.onerror = () => reject(r.error)
    }))
  }
}

// ---- one client id per browser profile --------------------------------------
//
// The tabs of a browser profile share a pool of client ids, each with its
// own queue database (autoglm-<id>) and a Web Lock a tab holds while it uses
// the id. A tab takes the profile's id (localStorage) when no other tab
// holds it, else the id of a closed tab, else a new one: one tab, one id;
// tabs open side by side get distinct ids, so op ids never collide. Every
// tab also waits for the lock of each id it does not hold: when the tab
// using it closes, the first waiter replays what that tab left queued (same
// client id, same op ids: the server applies each op once) and then deletes
// the database, except the profile id's, which the next tab reuses.

const DB_PREFIX = 'autoglm-'
const PROFILE_KEY = 'autoglm.client'
const lockName = id => 'autoglm.client:' + id

// hold takes the Web Lock `name` (if free, or when it frees up with wait)
// and keeps it until the returned release() is called; null when it was
// not free.
function hold (locks, name, wait, signal) {
  return new Promise(resolve => {
    let release
    const held = new Promise(resolve => { release = resolve })
    locks.request(name, wait ? { signal } : { ifAvailable: true }, lock => {
      resolve(lock ? release : null)
      return lock && held
    }).catch(() => resolve(null))
  })
}

// knownIds lists the client ids with a queue database in this profile,
// including the per-tab databases of earlier versions of the client.
async function knownIds (idb) {
  const dbs = await idb.databases?.().catch(() => []) || []
  return dbs.map(d => d.name).filter(n => n?.startsWith(DB_PREFIX)).map(n => n.slice(DB_PREFIX.length))
}

// claimId picks and locks this tab's client id: {id, fresh, release}.
async function claimId (locks, idb, ls) {
  let profile = ls?.getItem(PROFILE_KEY)
  const fresh = !profile
  if (!profile) { profile = randomId(); ls?.setItem(PROFILE_KEY, profile) }
  const ids = [profile, ...(await knownIds(idb)).filter(id => id !== profile)]
  for (const id of ids) {
    const release = await hold(locks, lockName(id))
    if (release) return { id, profile, fresh: fresh && id === profile, release }
  }
  const id = randomId()
  return { id, profile, fresh: true, release: await hold(locks, lockName(id)) || (() => {}) }
}

// ---- transports ------------------------------------------------------------

// Maps an HTTP error of a fallback transport to the close code a WebSocket
// would have ended with, so one close policy covers every transport.
const httpClose = status => ({ 400: 4500, 401: 4501, 403: 4502, 413: 4503, 415: 4500, 429: 4004 })[status] || (status >= 500 ? 4005 : 1006)

// Each transport takes the hello and the handlers {open(kind), msg(m),
// close(code, reason)} and returns {send(m), close()}.
export const transports = {
  ws (c, hello, h) {
    const WS = c.o.WebSocket || globalThis.WebSocket
    const ws = new WS(c.wsURL, c.o.binary === false ? [SUB_JSON] : [SUB_BIN, SUB_JSON])
    ws.binaryType = 'arraybuffer'
    let bin = false; let done = false
    const end = (code, reason) => { if (!done) { done = true; h.close(code, reason) } }
    const send = m => ws.readyState === 1 && ws.send(bin ? encodeFrames(m) : JSON.stringify(m))
    ws.onopen = () => {
      bin = ws.protocol === SUB_BIN
      h.open(bin ? 'ws+bin' : 'ws')
      send(hello)
    }
    ws.onmessage = e => {
      let ms
      try {
        ms = typeof e.data === 'string' ? [expand(JSON.parse(e.data))] : decodeFrames(e.data)
      } catch (err) {
        ws.close(4500, String(err.code || 'malformed message'))
        return end(1006, 'undecodable message from the server: ' + err.message)
      }
      ms.forEach(h.msg)
    }
    ws.onclose = e => end(e.code || 1006, e.reason)
    ws.onerror = () => {} // a close event follows
    return { send, close: () => { ws.close(1000); end(1000, 'closed') } }
  },

  sse (c, hello, h) {
    const fetch = c.o.fetch || globalThis.fetch
    const ctl = new AbortController()
    const post = poster(c, ctl, '/v1/events/', h)
    fetch(`${c.httpURL}/v1/events?hello=${encodeURIComponent(JSON.stringify(hello))}`, { signal: ctl.signal, headers: { accept: 'text/event-stream' }, cache: 'no-store' })
      .then(async res => {
        if (!res.ok) return post.end(httpClose(res.status), await errorOf(c, res))
        h.open('sse')
        const rd = res.body.getReader()
        const dec = new TextDecoder()
        let buf = ''
        for (;;) {
          const { value, done } = await rd.read()
          if (done) return post.end(1006, 'event stream ended')
          buf += dec.decode(value, { stream: true }).replace(/\r\n?/g, '\n')
          for (let i; (i = buf.indexOf('\n\n')) >= 0;) {
            const ev = { event: 'message', data: [] }
            for (const line of buf.slice(0, i).split('\n')) {
              const [, k, v] = line.match(/^([^:]*):? ?(.*)$/)
              if (k === 'data') ev.data.push(v)
              else if (k === 'event') ev.event = v
            }
            buf = buf.slice(i + 2)
            if (!ev.data.length) continue
            const m = expand(JSON.parse(ev.data.join('\n')))
            if (ev.event === 'close') return post.end(m.code, m.reason)
            if (m.t === 'welcome') post.session(m.session)
            h.msg(m)
          }
        }
      })
      .catch(e => post.end(1006, String(e.message || e)))
    return post
  },

  longpoll (c, hello, h) {
    const fetch = c.o.fetch || globalThis.fetch
    const ctl = new AbortController()
    const post = poster(c, ctl, '/v1/poll/', h)
    const json = { 'content-type': 'application/json' }
    ;(async () => {
      let res = await fetch(`${c.httpURL}/v1/poll`, { method: 'POST', headers: json, body: JSON.stringify(hello), signal: ctl.signal })
      if (!res.ok) return post.end(httpClose(res.status), await errorOf(c, res))
      let r = await res.json()
      post.session(r.session)
      h.open('longpoll')
      for (;;) {
        r.messages.forEach(m => h.msg(expand(m)))
        if (r.close) return post.end(r.close.code, r.close.reason)
        res = await fetch(`${c.httpURL}/v1/poll/${r.session || post.sid}?after=${r.seq}`, { signal: ctl.signal, cache: 'no-store', headers: bearer(c) })
        if (!res.ok) return post.end(httpClose(res.status), await errorOf(c, res))
        r = await res.json()
      }
    })().catch(e => post.end(1006, String(e.message || e)))
    return post
  }
}

// bearer is the Authorization header of a fallback session's later
// requests: the server accepts them only from the identity that opened it.
const bearer = (c, headers = {}) => c.o.token ? { ...headers, authorization: 'Bearer ' + c.o.token } : headers

// errorOf reads a refusal of a fallback request; a refused origin is also
// reported as an 'error' event with code origin_not_allowed.
async function errorOf (c, res) {
  let e
  try { e = (await res.json()).error } catch { return `HTTP ${res.status}` }
  if (e.details?.origin) c._emit('error', { t: 'error', code: 'origin_not_allowed', msg: e.message, details: e.details })
  return `${e.code}: ${e.message}`
}

// poster sends client messages of a fallback session as JSON arrays, one
// POST at a time so they arrive in order; it also owns the end of the
// session.
function poster (c, ctl, path, h) {
  const fetch = c.o.fetch || globalThis.fetch
  let queue = []; let busy = false; let done = false
  const p = {
    sid: '',
    session (id) { p.sid = id; flush() },
    send (m) { queue.push(m); flush() },
    close () { p.end(1000, 'closed') },
    end (code, reason) {
      if (done) return
      done = true
      ctl.abort()
      h.close(code, reason)
    }
  }
  async function flush () {
    if (busy || done || !p.sid || !queue.length) return
    busy = true
    const batch = queue; queue = []
    try {
      const res = await fetch(c.httpURL + path + p.sid, { method: 'POST', headers: bearer(c, { 'content-type': 'application/json' }), body: JSON.stringify(batch), signal: ctl.signal })
      if (!res.ok) return p.end(res.status === 404 ? 1006 : httpClose(res.status), await errorOf(c, res))
    } catch (e) {
      return p.end(1006, String(e.message || e))
    } finally { busy = false }
    flush()
  }
  return p
}

/**
 * Transport order for a `transport` option: 'auto' tries WebSocket when
 * there is an implementation, then SSE, then long-polling.
 */
export function chooseTransports (opt = 'auto', env = globalThis) {
  if (opt !== 'auto') return [opt]
  const list = []
  if (env.WebSocket) list.push('ws')
  if (env.fetch && env.ReadableStream) list.push('sse')
  if (env.fetch) list.push('longpoll')
  return list
}

// ---- documents -------------------------------------------------------------

export class Doc extends Emitter {
  constructor (sync, name) {
    super()
    Object.assign(this, { sync, name, version: 0, data: {}, deleted: false, pending: [], peers: new Map(), hooks: [], synced: false })
    this._state = {}
    this.ready = new Promise(resolve => { this._ready = resolve })
  }

  /** Local view: the confirmed state with pending edits applied on top. */
  get state () { return this._state }
  get (path) { return getPath(this._state, path) }
  set (path, value) { return this.update([{ op: 'set', path, value }]) }
  unset (path) { return this.update([{ op: 'unset', path }]) }
  increment (path, n = 1) { return this.update([{ op: 'inc', path, value: n }]) }
  add (path, value) { return this.update([{ op: 'add', path, value }]) }
  remove (path, value) { return this.update([{ op: 'remove', path, value }]) }
  /** Deletes the document (a tombstone). */
  delete () { return this.sync._submit(this, [], true) }
  /** Applies several field ops atomically (one op, one version). */
  update (ops) { return this.sync._submit(this, ops) }

  /**
   * The text field at path (docs/client.md, "Text fields"): value,
   * insert(pos, text), delete(pos, count), splice(pos, count, text), and
   * on('change', e) with e = {index, deleted, inserted, value, remote}.
   * Positions count Unicode code points.
   */
  text (path) {
    const texts = (this._texts ||= new Map())
    if (!texts.has(path)) texts.set(path, new TextField(this, path))
    return texts.get(path)
  }

  /**
   * The read rules now hide the document (`not_readable`): the server sends
   * nothing of it, the others' presence included, and has withdrawn ours
   * until a snapshot shows it again.
   */
  _hide () {
    this._hidden = true
    if (this.peers.size) { this.peers.clear(); this._emit('presence', this.peers) }
  }

  /** Sets this client's presence on the document (null clears it). */
  presence (data) {
    this._presence = data
    this.sync._send({ t: 'presence', doc: this.name, data: data ?? null })
  }

  // rebase recomputes the local view from the confirmed state and the
  // pending ops, in op order.
  _rebase (info) {
    const s = clone(this.data)
    for (const p of this.pending) {
      if (p.del) {
        for (const k of Object.keys(s)) delete s[k]
      } else {
        try { applyOps(s, p.ops) } catch { /* the server refuses it too: its reject follows */ }
      }
    }
    this._state = s
    this.sync._persistDoc(this)
    this._emit('change', this._state, info)
  }
}

class TextField extends Emitter {
  constructor (doc, path) {
    super()
    Object.assign(this, { doc, path })
    this._last = this.value
    doc.on('change', (_, info) => this._changed(info))
  }

  get value () { const v = this.doc.get(this.path); return typeof v === 'string' ? v : '' }
  insert (pos, text) { return this.splice(pos, 0, text) }
  delete (pos, count = 1) { return this.splice(pos, count, '') }

  /** Deletes count characters at pos and inserts text there, as one op. */
  splice (pos, count, text) {
    const s = clone(this.doc.state)
    const ops = []
    const del = count > 0 && deleteOp(s, this.path, pos, count)
    if (del) { ops.push(del); applyOps(s, [del]) }
    if (text) ops.push(insertOp(s, this.path, this.doc.sync.clientId, pos, text))
    return ops.length ? this.doc.update(ops) : null
  }

  _changed (info) {
    const next = this.value; const prev = this._last
    if (next === prev) return
    this._last = next
    const [index, deleted, inserted] = diff(prev, next)
    this._emit('change', { index, deleted, inserted, value: next, remote: !info?.local })
  }
}

// Caret positions: the DOM counts UTF-16 units, text fields code points.
const toPoints = (s, u) => [...s.slice(0, u)].length
const toUnits = (s, p) => [...s].slice(0, p).join('').length

// ---- the client ------------------------------------------------------------

export class Sync extends Emitter {
  constructor (url, o = {}) {
    super()
    const base = (url || globalThis.location?.origin || '').replace(/\/v1\/sync\/?$/, '').replace(/\/$/, '')
    this.httpURL = base.replace(/^ws/, 'http')
    this.wsURL = base.replace(/^http/, 'ws') + '/v1/sync'
    this.o = o
    this.docs = new Map()
    this._byH = []
    this._authors = new Map()
    this.status = 'connecting'
    this.transport = ''
    this.rtt = null
    this.breaker = new Breaker({ now: o.now, ...o.breaker })
    this.order = chooseTransports(o.transport, { WebSocket: o.WebSocket || globalThis.WebSocket, fetch: o.fetch || globalThis.fetch, ReadableStream: globalThis.ReadableStream })
    this._ti = 0
    this._attempt = 0
    this._offline = !!o.offline
    this._timers = o.timers || globalThis
    this._now = o.now || Date.now
    this._hlc = { wall: 0, n: 0 }
    this._worked = new Set() // transports that have opened at least once
    this._drains = new Set()
    this._retrying = 0 // refused ops waiting to be sent again
    const idb = globalThis.indexedDB
    // In browsers with Web Locks the id comes from the profile's pool
    // (claimId, while loading); else from the option, the tab or chance.
    this._pool = !o.clientId && !o.storage && idb && globalThis.navigator?.locks
    if (this._pool) this.clientId = ''
    else this._id(o)
    this._storage = o.storage || (idb && !this._pool ? indexedDBStorage(DB_PREFIX + this.clientId) : memoryStorage())
    // Back on the network, or back in front of the user: retry at once.
    this._wake = () => { if (globalThis.document?.visibilityState !== 'hidden') this._resume() }
    globalThis.addEventListener?.('online', this._wake)
    globalThis.document?.addEventListener?.('visibilitychange', this._wake)
    this.ready = this._load()
  }

  _id (o) {
    let id = o.clientId; let fresh = false
    const ss = !id && globalThis.sessionStorage
    if (!id) id = ss?.getItem(PROFILE_KEY)
    if (!id) { id = randomId(); fresh = true; ss?.setItem(PROFILE_KEY, id) }
    this.clientId = id
    this._freshId = fresh
  }

  // _claim takes this tab's id from the profile's pool and starts waiting
  // for the others (see "one client id per browser profile").
  async _claim () {
    const locks = globalThis.navigator.locks
    const c = await claimId(locks, globalThis.indexedDB, globalThis.localStorage)
    Object.assign(this, { clientId: c.id, _freshId: c.fresh, _release: c.release })
    this._storage = indexedDBStorage(DB_PREFIX + c.id)
    if (this.status === 'closed') return c.release()
    const ctl = this._adopting = new AbortController()
    for (const id of await knownIds(globalThis.indexedDB)) {
      if (id === c.id) continue
      hold(locks, lockName(id), true, ctl.signal).then(release => release && this._drain(id, id !== c.profile).finally(release))
    }
  }

  // _drain replays the queue another tab left under client id `id` as that
  // client, then deletes the database when `drop`.
  async _drain (id, drop) {
    if (this.status === 'closed') return
    const storage = indexedDBStorage(DB_PREFIX + id)
    const kv = await storage.load().catch(() => new Map())
    if ([...kv.keys()].some(k => k.startsWith('op:'))) {
      const sub = new Sync(this.httpURL, { ...this.o, clientId: id, storage, offline: false })
      this._drains.add(sub)
      await new Promise(resolve => { sub._whenDrained = resolve })
      sub.close()
      this._drains.delete(sub)
    }
    if (drop && this.status !== 'closed') await storage.drop().catch(() => {})
  }

  async _load () {
    if (this._pool) await this._claim()
    // Storage that cannot open (private browsing, quota) degrades to memory.
    const kv = await this._storage.load().catch(e => {
      this._emit('error', { t: 'error', code: 'storage', msg: String(e) })
      this._storage = memoryStorage()
      return new Map()
    })
    const meta = kv.get('meta')
    // A client id reused without its stored op counter must not reuse op
    // ids the server has seen (it would answer them as duplicates).
    this._nextOp = meta ? meta.nextOp : this._freshId ? 0 : this._now()
    this._loaded = true
    for (const d of this.docs.values()) {
      for (const p of d.pending) {
        // Made before the id and op counter were known.
        p.op = ++this._nextOp
        const [wall, n] = p.hlc.split('.')
        p.hlc = `${wall}.${n}.${this.clientId}`
        this._saveOp(p)
      }
    }
    for (const [k, v] of kv) {
      if (k.startsWith('op:')) this.doc(v.doc).pending.push(v)
      else if (k.startsWith('doc:')) {
        const d = this.doc(k.slice(4))
        if (!d.version) Object.assign(d, { version: v.version, data: v.data, deleted: v.deleted })
      }
    }
    for (const d of this.docs.values()) {
      d.pending.sort((a, b) => a.op - b.op)
      d._rebase({ loaded: true })
    }
    if (!this._offline) this._connect()
    else this._setStatus('paused')
  }

  /**
   * The document handle for "collection/id" (subscribes on first use);
   * throws an Error with code 'invalid_name' for a name the server refuses.
   */
  doc (name) {
    let d = this.docs.get(name)
    if (!d) {
      d = new Doc(this, checkName(name))
      this.docs.set(name, d)
      // The document's handle on the wire (the server names it by h in
      // deltas and acks): its place among this client's documents.
      d.h = this.docs.size
      this._byH[d.h] = d
      if (this.status === 'online') this._sub(d, 0)
    }
    return d
  }

  /**
   * Watches a document with hooks: onRemoteUpdate(change, localState) for
   * changes by others, onConflict(c) when the server refused an op as a
   * conflict (return field ops to retry with), onReject(r) for other
   * refusals, retryPolicy {maxRetries, backoff: 'exponential'|'linear'|'none',
   * base} for retryable refusals. Returns the function that removes them.
   */
  registerSyncHook (name, hooks) {
    if (typeof name === 'string' && !name.includes('/')) {
      // A collection: every document of it the client may read.
      const q = this.query(name)
      const remote = (it, change) => change.local || hooks.onRemoteUpdate?.(change, it.data)
      q.on('added', remote)
      q.on('changed', remote)
      q.on('removed', (it, change) => hooks.onRemove?.(change, it.data))
      return () => q.close()
    }
    const d = this.doc(name)
    d.hooks.push(hooks)
    return () => { d.hooks = d.hooks.filter(h => h !== hooks) }
  }

  /**
   * A live query over collection: {where: [[path, op, value], …],
   * orderBy: [[path, 'asc'|'desc'], …], limit} (docs/protocol.md,
   * "Queries"). Returns a Query whose `results` follow the server.
   */
  query (collection, { where, orderBy, limit } = {}) {
    if (!/^[a-z][a-z0-9_-]{0,63}$/.test(collection)) {
      throw Object.assign(new Error(`collection name ${JSON.stringify(collection)}: want [a-z][a-z0-9_-]{0,63}`), { code: 'invalid_name' })
    }
    const q = {}
    if (where) q.where = where
    if (orderBy) q.order_by = orderBy
    if (limit) q.limit = limit
    this._queries ||= new Map()
    this._qid = (this._qid || 0) + 1
    const query = new Query(this, collection, q, 'q' + this._qid)
    this._queries.set(query.qid, query)
    if (this.status === 'online') query._sub()
    return query
  }

  /** Forces the client offline (edits queue) or back online (they replay). */
  setOffline (off) {
    this._offline = off
    if (off) {
      this._clearTimer()
      this._conn?.close()
      this._setStatus('paused')
    } else if (this.status === 'paused' || this.status === 'stopped') {
      this._attempt = 0
      this.breaker.success()
      this._connect()
    }
  }

  /**
   * Reconnects at once, e.g. with a new token or roles ({token, roles});
   * queued edits replay on the new connection.
   */
  reconnect (opts = {}) {
    Object.assign(this.o, opts)
    this._clearTimer()
    const conn = this._conn
    this._token = this._conn = null
    conn?.close()
    this._attempt = 0
    if (this._offline) return
    this.breaker.success()
    this._closed(1000, 'reconnect', false, true, true)
  }

  /** Ends the connection for good (and frees this tab's client id). */
  close () {
    this._offline = true
    this._clearTimer()
    this._conn?.close()
    this._setStatus('closed')
    globalThis.removeEventListener?.('online', this._wake)
    globalThis.document?.removeEventListener?.('visibilitychange', this._wake)
    this._adopting?.abort()
    for (const sub of this._drains) sub.close()
    this._release?.()
  }

  // _resume connects at once when a retry is waiting (the network is back,
  // the page is visible again); an open overload breaker still holds.
  _resume () {
    if (this._offline || this.status !== 'offline' || !this.breaker.allow()) return
    this._attempt = 0
    this._connect()
  }

  // ---- connection lifecycle

  _setStatus (status, extra) {
    this.status = status
    this._emit('status', { status, transport: this.transport, breaker: this.breaker.state, ...extra })
  }

  _clearTimer () {
    for (const t of [this._retryTimer, this._pingTimer, this._stableTimer]) {
      this._timers.clearTimeout(t)
      this._timers.clearInterval(t)
    }
  }

  _connect () {
    this._clearTimer()
    if (this._offline) return
    if (!this.breaker.allow()) return this._retry(this.breaker.retryIn())
    const kind = this.order[this._ti]
    if (!kind) return this._setStatus('stopped', { code: 4504, reason: 'no transport available' })
    this._setStatus('connecting')
    const hello = { t: 'hello', client: this.clientId, proto: this._proto || PROTO }
    if (this.o.token) hello.token = this.o.token
    if (this.o.roles?.length) hello.roles = this.o.roles
    let welcomed = false; let opened = false
    // token identifies this attempt: events of an older connection (or one
    // that failed before the transport returned) are ignored.
    const token = this._token = {}
    const conn = transports[kind](this, hello, {
      open: t => { opened = true; this.transport = t; this._worked.add(kind) },
      msg: m => {
        if (this._token !== token) return
        this._lastRecv = this._now()
        if (m.t === 'welcome') { welcomed = true; this._welcomed = this._now() }
        this._handle(m)
      },
      close: (code, reason) => {
        if (this._token !== token) return
        this._token = this._conn = null
        this._closed(code, reason, welcomed, opened, false, kind)
      }
    })
    if (this._token === token) this._conn = conn
  }

  _closed (code, reason, welcomed, opened, now, kind) {
    this._clearTimer()
    for (const d of this.docs.values()) {
      d.synced = false
      if (d.peers.size) { d.peers.clear(); d._emit('presence', d.peers) }
    }
    this._emit('disconnect', { code, reason })
    if (this._offline) return
    if (now) return this._connect()
    // A server older than the compact forms refuses proto 2: speak 1.
    if (code === 4504 && !welcomed && reason === 'unsupported protocol version' && !this._proto) {
      this._proto = 1
      return this._connect()
    }
    const stable = welcomed && this._now() - this._welcomed >= (this.o.stableAfter ?? 5000)
    if (stable) {
      this._attempt = 0
    } else {
      // Only the server's own overload signals count for the breaker; a
      // server that is down or a lost network is retried within the
      // backoff cap.
      if (code === 4004 || code === 4005) this.breaker.failure()
      this._attempt++
      // A transport that has never opened is likely blocked here: fall
      // back to the next one (WebSocket → SSE → long-poll) after two tries.
      // One that has worked before is kept (the server is just down).
      if (!opened && !this._worked.has(kind) && this._attempt % 2 === 0 && this._ti < this.order.length - 1) this._ti++
    }
    if (code >= 4500 && code < 5000) {
      return this._setStatus('stopped', { code, reason })
    }
    let delay = backoffDelay(this._attempt, this.o.backoff, this.o.random)
    if (code === 4004) delay += 5000
    this._setStatus('offline', { code, reason })
    if (code === 4003 && this.o.refreshToken) {
      return Promise.resolve(this.o.refreshToken()).then(t => { this.o.token = t; this._retry(delay) }, () => this._retry(delay))
    }
    this._retry(this.breaker.state === 'open' ? this.breaker.retryIn() : delay)
  }

  _retry (delay) {
    this._setStatus(this._offline ? 'paused' : 'offline', { retryIn: delay })
    this._retryTimer = this._timers.setTimeout(() => this._connect(), delay)
  }

  _send (m) {
    if (this.status !== 'online' || !this._conn) return false
    this._conn.send(m)
    return true
  }

  _sub (d, since) { this._send({ t: 'sub', doc: d.name, since, h: d.h }) }

  _online (m) {
    this.clientId = m.client || this.clientId
    this._node = m.node
    this._authors.clear()
    this._setStatus('online', { node: m.node })
    const hb = m.hb || 15000
    // The connection counts as healthy (breaker closed, backoff reset) once
    // it has stayed up for a while; a server that accepts and drops at once
    // still trips the breaker.
    this._stableTimer = this._timers.setTimeout(() => { this.breaker.success(); this._attempt = 0; this._emit('status', { status: this.status, transport: this.transport, breaker: this.breaker.state }) }, this.o.stableAfter ?? 5000)
    this._pingTimer = this._timers.setInterval(() => {
      if (this._now() - this._lastRecv > hb * 2.5) return this._conn?.close()
      this._send({ t: 'ping', ts: this._now() })
    }, Math.min(hb, this.o.pingInterval ?? 5000))
    this._send({ t: 'ping', ts: this._now() })
    // Resume: every document from the version held, then every queued op
    // with its original id (the server answers ones it has applied dup:true).
    const ops = []
    for (const d of this.docs.values()) {
      this._sub(d, d.version)
      ops.push(...d.pending)
      if (d._presence) this._send({ t: 'presence', doc: d.name, data: d._presence })
    }
    for (const p of ops.sort((a, b) => a.op - b.op)) this._sendOp(p)
    // Live queries resume from the versions they hold.
    for (const q of this._queries?.values() || []) q._sub()
  }

  // _sendOp sends a queued op; `sent` records that it may have reached the
  // server, after which its content must never change.
  _sendOp (p) {
    const m = { ...p }
    delete m.sent; delete m.retries
    p.sent = this._send(m) || p.sent
  }

  // ---- ops

  _stamp () {
    const h = this._hlc
    const now = this._now()
    if (now > h.wall) { h.wall = now; h.n = 0 } else h.n++
    return `${h.wall}.${h.n}.${this.clientId}`
  }

  _observe (hlc) {
    const [wall, n] = (hlc || '').split('.').map(Number)
    const h = this._hlc
    if (wall > h.wall && wall - this._now() < 60000) { h.wall = wall; h.n = n }
  }

  _submit (d, ops, del) {
    const last = d.pending[d.pending.length - 1]
    const one = ops.length === 1 && ops[0].op === 'set'
    // Offline typing in one field: fold into the queued edit that was
    // never sent instead of queueing every keystroke.
    if (one && last && !last.sent && !last.del && last.ops.length === 1 && last.ops[0].op === 'set' && last.ops[0].path === ops[0].path) {
      last.ops = clone(ops)
      last.hlc = this._stamp()
    } else {
      // Before storage has loaded, op ids are not known yet (0); _load
      // numbers such ops after the stored ones.
      const p = { t: 'op', doc: d.name, op: this._loaded ? ++this._nextOp : 0, base: d.version, hlc: this._stamp() }
      const trace = this._trace()
      if (trace) p.trace = trace
      if (del) p.del = true
      else p.ops = clone(ops)
      d.pending.push(p)
      this._saveOp(p)
      this._sendOp(p)
    }
    this._saveOp(d.pending[d.pending.length - 1])
    d._rebase({ local: true })
    return d.pending[d.pending.length - 1]
  }

  // _resend queues a refused op again unchanged (same op id and content):
  // the server applies it once whether or not the refused attempt was
  // stored.
  _resend (d, p, tries) {
    p.retries = tries
    const i = d.pending.findIndex(q => q.op > p.op)
    d.pending.splice(i < 0 ? d.pending.length : i, 0, p)
    this._saveOp(p)
    this._sendOp(p)
    d._rebase({ local: true })
  }

  // The W3C traceparent an op carries (option trace): the page tracer's
  // current span, or with trace: true a span of the page's trace (its
  // <meta name="traceparent">) or of a new one.
  _trace () {
    const t = this.o.trace
    if (typeof t === 'function') {
      const tp = t()
      return TRACEPARENT.test(tp || '') ? tp : undefined
    }
    if (!t) return undefined
    const page = TRACEPARENT.exec(globalThis.document?.querySelector?.('meta[name="traceparent"]')?.content || '')
    return `00-${page ? page[1] : randomHex(16)}-${randomHex(8)}-01`
  }

  _saveOp (p) {
    if (!p.op) return
    this._storage.put('meta', { nextOp: this._nextOp })
    this._storage.put('op:' + p.op, { ...p, sent: true })
  }

  _settle (d, op) {
    const i = d.pending.findIndex(p => p.op === op)
    if (i < 0) return null
    const [p] = d.pending.splice(i, 1)
    this._storage.del('op:' + op)
    // Checked once the answer is handled (a refusal may schedule a retry).
    if (this._whenDrained) queueMicrotask(() => !this._retrying && [...this.docs.values()].every(d => !d.pending.length) && this._whenDrained())
    return p
  }

  _persistDoc (d) {
    // Confirmed copies are written at most once a second per document.
    if (d._saving) return
    d._saving = this._timers.setTimeout(() => {
      d._saving = null
      this._storage.put('doc:' + d.name, { version: d.version, data: d.data, deleted: d.deleted })
    }, 1000)
  }

  // ---- incoming messages

  _handle (m) {
    // The compact forms (proto 2): h names a document by the handle of its
    // sub, a an author told once per connection, and an hlc without its
    // node is the author's (on an ack: this client's), one ending in "."
    // the server's (the welcome's node).
    if (m.h) m.doc = this._byH[m.h]?.name
    if (m.a) m.by ? this._authors.set(m.a, m.by) : (m.by = this._authors.get(m.a))
    if (/^\d+\.\d+$/.test(m.hlc)) m.hlc += '.' + (m.t === 'ack' ? this.clientId : m.by)
    else if (/^\d+\.\d+\.$/.test(m.hlc)) m.hlc += this._node
    if (m.qid) return this._queries?.get(m.qid)?._msg(m)
    const d = m.doc && this.docs.get(m.doc)
    switch (m.t) {
      case 'welcome': return this._online(m)
      case 'ping': return this._send({ t: 'pong', ts: m.ts })
      case 'pong':
        this.rtt = Math.max(0, this._now() - m.ts)
        return this._emit('latency', this.rtt)
      case 'error':
        if (d && m.code === 'not_readable') d._hide()
        return this._emit('error', m)
      case 'reject': return d && this._reject(d, m)
    }
    if (!d) return
    switch (m.t) {
      case 'snap': {
        Object.assign(d, { version: m.v, data: m.data || {}, deleted: !!m.del })
        // Readable again: the presence the server withdrew is set again.
        const shown = d._hidden && d._presence
        d._hidden = false
        d._rebase({ snapshot: true })
        if (shown) this._send({ t: 'presence', doc: d.name, data: d._presence })
        return
      }
      case 'synced':
        d.synced = true
        d._ready(d)
        return d._emit('synced', d)
      case 'presence':
        if (m.del || !m.data) d.peers.delete(m.client)
        else d.peers.set(m.client, m.data)
        return d._emit('presence', d.peers)
      case 'delta': case 'ack': {
        this._observe(m.hlc)
        const own = m.t === 'ack' || m.by === this.clientId
        const p = own ? this._settle(d, m.op) : null
        if (m.t === 'ack' && m.dup) return p && d._rebase({ ack: true })
        if (m.v <= d.version) return p && d._rebase({ ack: true })
        if (m.v !== d.version + 1) {
          // A gap the server should never leave: resubscribe from what we have.
          return this._sub(d, d.version)
        }
        if (m.new || m.del) d.data = {}
        const ops = m.ops ?? p?.ops ?? []
        try {
          applyOps(d.data, ops)
        } catch {
          // The server applied these ops to the same version, so this copy
          // is not what the server holds: start over from a snapshot.
          d.version = 0
          return this._sub(d, 0)
        }
        Object.assign(d, { version: m.v, deleted: !!m.del })
        const change = { doc: d.name, version: m.v, ops: clone(ops), by: m.t === 'ack' ? this.clientId : m.by, op: m.op, hlc: m.hlc, created: !!m.new, deleted: !!m.del, local: own }
        d._rebase(m.t === 'ack' ? { ack: true, change } : { remote: true, change })
        if (m.t === 'delta' && !own) for (const h of d.hooks) h.onRemoteUpdate?.(change, d.state)
      }
    }
  }

  _reject (d, m) {
    const p = this._settle(d, m.op)
    const r = { doc: d.name, op: m.op, code: m.code, msg: m.msg, details: m.details, ops: p?.ops }
    if (p) d._rebase({ reject: r })
    this._emit('reject', r)
    if (!p) return
    for (const h of d.hooks.length ? d.hooks : [{}]) {
      const policy = { maxRetries: 3, backoff: 'exponential', base: 500, ...h.retryPolicy }
      const tries = (p.retries || 0) + 1
      if (RETRYABLE.has(m.code) && tries <= policy.maxRetries) {
        const wait = policy.backoff === 'none' ? 0 : policy.backoff === 'linear' ? policy.base * tries : policy.base * 2 ** (tries - 1)
        this._retrying++
        this._timers.setTimeout(() => { this._retrying--; this._resend(d, p, tries) }, wait)
        return
      }
      if (m.code === 'conflict' && h.onConflict) {
        Promise.resolve(h.onConflict({ ...r, state: d.state })).then(ops => { if (Array.isArray(ops) && ops.length) this._submit(d, ops) })
        return
      }
      h.onReject?.(r)
    }
  }

  // ---- forms

  /**
   * Two-way binding of a form to a document by field name with one
   * delegated listener: edits become set ops (checkbox groups add/remove),
   * remote changes are written back except into the field being edited,
   * and focus is published as presence {field}. Returns the unbind function.
   */
  bindForm (form, name, { presence = this.o.presence, text = [] } = {}) {
    const d = this.doc(name)
    const els = n => [...form.elements].filter(e => e.name === n)
    // Text fields (listed in `text`, or holding text metadata) are edited
    // with ins/del and keep the caret where it was while remote edits land.
    const typable = el => el.tagName === 'TEXTAREA' || (el.tagName === 'INPUT' && /^(text|search|url|tel|email|)$/.test(el.type))
    const isText = el => typable(el) && (text.includes(el.name) || Object.hasOwn(d.state[TEXT] || {}, el.name))
    const seen = new Map() // text element → the Text it shows
    // An edit is the difference between what the element showed (seen)
    // and what it shows now, anchored to the characters it showed, so
    // remote edits that landed meanwhile are kept.
    let composing = null
    const onText = el => {
      const base = seen.get(el) || Text.of(d.state, el.name)
      const [i, n, added] = diff(base.toString(), el.value)
      const shown = { [el.name]: base.toString(), [TEXT]: { [el.name]: base.meta() } }
      const ops = []
      const del = n && deleteOp(shown, el.name, i, n)
      if (del) { ops.push(del); applyOps(shown, [del]) }
      if (added) {
        const ins = insertOp(shown, el.name, this.clientId, i, added)
        ins.value[1] = Math.max(ins.value[1], Text.of(d.state, el.name).maxClock() + 1)
        ops.push(ins)
        applyOps(shown, [ins])
      }
      if (!ops.length) return
      seen.set(el, Text.of(shown, el.name))
      d.update(ops)
    }
    const writeText = el => {
      if (el === composing) return
      const next = Text.of(d.state, el.name)
      const v = next.toString()
      const old = seen.get(el)
      seen.set(el, next)
      if (el.value === v) return
      const active = el === form.ownerDocument.activeElement && old && old.toString() === el.value
      const sel = active && [el.selectionStart, el.selectionEnd].map(u => {
        const p = toPoints(el.value, u)
        const c = next.caret(p > 0 ? old.idAt(p - 1) : null)
        return c < 0 ? p : c
      })
      el.value = v
      if (sel) el.setSelectionRange(toUnits(v, sel[0]), toUnits(v, sel[1]), el.selectionDirection)
    }
    const isGroup = el => el.type === 'checkbox' && els(el.name).length > 1
    const read = el => el.type === 'checkbox'
      ? el.checked
      : el.type === 'select-multiple'
        ? [...el.selectedOptions].map(o => o.value)
        : (el.type === 'number' || el.type === 'range') && el.value !== '' ? +el.value : el.value
    const onEdit = e => {
      const el = e.target
      if (!el.name || el.form !== form || (el.type === 'radio' && !el.checked)) return
      if (isGroup(el)) {
        // input and change both fire for a checkbox: act once.
        const set = d.get(el.name)
        if (el.checked === (Array.isArray(set) && set.includes(el.value))) return
        return el.checked ? d.add(el.name, el.value) : d.remove(el.name, el.value)
      }
      if (isText(el)) {
        composing = e.type === 'compositionstart' || e.isComposing ? el : null
        if (!composing) onText(el)
        return
      }
      const v = read(el)
      if (canon(d.get(el.name)) !== canon(v)) d.set(el.name, v)
    }
    const write = () => {
      const active = form.ownerDocument.activeElement
      for (const el of form.elements) {
        if (el.name && isText(el)) { writeText(el); continue }
        if (!el.name || el === active) continue
        const v = d.get(el.name)
        if (el.type === 'checkbox') el.checked = isGroup(el) ? Array.isArray(v) && v.includes(el.value) : !!v
        else if (el.type === 'radio') el.checked = v != null && String(v) === el.value
        else if (el.type === 'select-multiple') for (const o of el.options) o.selected = Array.isArray(v) && v.includes(o.value)
        else if (el.value !== String(v ?? '')) el.value = v ?? ''
      }
    }
    const focus = e => {
      if (e.target.name && e.target.form === form) d.presence({ ...presence, field: e.type === 'focusin' ? e.target.name : null })
      if (e.type === 'focusout') setTimeout(write)
    }
    for (const t of ['input', 'change', 'compositionstart', 'compositionend']) form.addEventListener(t, onEdit)
    for (const t of ['focusin', 'focusout']) form.addEventListener(t, focus)
    const off = d.on('change', write)
    write()
    return () => {
      off()
      for (const t of ['input', 'change', 'compositionstart', 'compositionend']) form.removeEventListener(t, onEdit)
      for (const t of ['focusin', 'focusout']) form.removeEventListener(t, focus)
    }
  }
}

/** Connects to an Open-AutoGLM service (base URL, e.g. "https://sync.example.com"). */
export function connect (url, options) {
  return new Sync(url, options)
}

export default { connect }
