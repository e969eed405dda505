// The demo page: a collaborative form and an approval board on the
// embedded JavaScript client. Query parameters: form=<doc> (a document
// name), board=<name> (the board's requests: approvals whose board field
// is that name), transport=auto|ws|sse|longpoll, binary=0 (JSON frames).
import { connect } from '/v1/client.js'

const $ = sel => document.querySelector(sel)
const params = new URLSearchParams(location.search)
const FORM = params.get('form') || 'forms/demo'
const BOARD = params.get('board') || 'demo'
const ROLES = { viewer: ['viewer'], editor: ['editor'], approver: ['approver', 'editor'] }
const NAMES = ['Ann', 'Bo', 'Chen', 'Dara', 'Eli', 'Femi', 'Gus', 'Hana', 'Ivo', 'Jun', 'Kai', 'Lina']
const COLORS = ['#e91e63', '#3f51b5', '#009688', '#ff9800', '#9c27b0', '#4caf50', '#795548', '#00bcd4']

// Who am I: kept per tab.
const me = JSON.parse(sessionStorage.getItem('demo.me') || 'null') || {
  name: NAMES[Math.floor(Math.random() * NAMES.length)],
  color: COLORS[Math.floor(Math.random() * COLORS.length)]
}
sessionStorage.setItem('demo.me', JSON.stringify(me))
const role = $('#role')
role.value = sessionStorage.getItem('demo.role') || 'editor'

const sync = connect(location.origin, {
  transport: params.get('transport') || 'auto',
  binary: params.get('binary') !== '0',
  roles: ROLES[role.value],
  presence: me
})
window.autoglm = sync // for the console (and the browser tests)

// ---- header: connection, latency, queue, offline switch, role -------------

$('#me').append(dot(me), document.createTextNode(` ${me.name}`))

sync.on('status', e => {
  const pill = $('#conn')
  pill.dataset.status = e.status
  let text = e.status
  if (e.status === 'offline' && e.retryIn != null) text = `reconnecting in ${(e.retryIn / 1000).toFixed(1)} s`
  if (e.breaker === 'open') text = 'server failing · paused'
  $('#conn-status').textContent = text
  $('#conn-transport').textContent = e.status === 'online' ? e.transport : ''
  if (e.status !== 'online') $('#conn-rtt').textContent = ''
  if (e.code >= 4500) toast(`connection refused (${e.code}): ${e.reason || ''}`, 'error')
})
sync.on('latency', rtt => { $('#conn-rtt').textContent = `${Math.round(rtt)} ms` })
sync.on('reject', r => {
  toast(`${r.code}: ${r.msg}`, 'error')
  log(`✗ ${r.doc} refused — ${r.code}`)
})
sync.on('error', m => {
  log(`! ${m.doc || 'connection'}: ${m.code} ${m.msg || ''}`)
  if (m.code === 'origin_not_allowed') toast(`this page's origin is not allowed by the server (AUTOGLM_ALLOWED_ORIGINS)`, 'error')
})

const offline = $('#offline')
offline.addEventListener('change', () => {
  sync.setOffline(offline.checked)
  log(offline.checked ? 'Offline: edits are queued' : 'Back online: replaying queued edits')
})

role.addEventListener('change', () => {
  sessionStorage.setItem('demo.role', role.value)
  sync.reconnect({ roles: ROLES[role.value] })
  renderBoard()
  log(`Role: ${role.value} (reconnected)`)
})

function updateQueued () {
  let n = 0
  for (const d of sync.docs.values()) n += d.pending.length
  const b = $('#queued')
  b.hidden = n === 0
  b.textContent = `${n} edit${n === 1 ? '' : 's'} queued`
}

// ---- the collaborative form -----------------------------------------------

const form = sync.doc(FORM)
// Title and Notes merge character by character (text fields): two people
// typing in them at once both keep their words.
sync.bindForm($('#form'), FORM, { text: ['title', 'notes'] })
form.on('change', (state, info) => {
  $('#responses').textContent = state.responses || 0
  $('#form-version').textContent = `v${form.version}`
  updateQueued()
  if (info.remote && info.change.ops.length) log(`${who(info.change.by)} changed ${[...new Set(info.change.ops.map(o => o.path))].join(', ')}`)
})
const names = new Map() // client id → name, remembered across reconnects
form.on('presence', peers => {
  for (const [id, p] of peers) if (p.name) names.set(id, p.name)
  renderPresence(peers)
})
form.presence({ ...me, field: null }) // say who is here before anyone focuses a field
$('#respond').addEventListener('click', () => form.increment('responses'))

function renderPresence (peers) {
  for (const slot of document.querySelectorAll('.presence')) slot.replaceChildren()
  const row = $('#peers')
  row.replaceChildren(avatar(me, true))
  for (const p of peers.values()) {
    row.append(avatar(p))
    const slot = p.field && document.querySelector(`.presence[data-field="${CSS.escape(p.field)}"]`)
    if (slot) slot.append(dot(p))
  }
}
renderPresence(form.peers)

// ---- the approval board ---------------------------------------------------

// A live query: the board's requests, whatever their status, as the server
// matches them (no list of ids to keep).
const board = sync.query('approvals', { where: [['board', '==', BOARD]], orderBy: [['title', 'asc']] })
board.on('change', renderBoard)
board.on('changed', (it, c) => {
  if (!c.local && c.ops.some(o => o.path === 'status')) log(`${who(c.by)} moved “${it.data.title}” to ${it.data.status}`)
})
board.on('error', m => { $('#board').dataset.error = `${m.code}: ${m.msg}` })
board.on('synced', () => delete $('#board').dataset.error)

// request opens a request's document to edit it; its pending edits show on
// the board until the server has them.
function request (id) {
  const name = 'approvals/' + id
  if (!sync.docs.has(name)) sync.doc(name).on('change', renderBoard)
  return sync.docs.get(name)
}

$('#new-request').addEventListener('submit', e => {
  e.preventDefault()
  const f = e.target
  const id = 'r-' + Math.random().toString(36).slice(2, 8)
  const ops = [
    { op: 'set', path: 'title', value: f.title.value.trim() },
    { op: 'set', path: 'status', value: 'draft' },
    { op: 'set', path: 'author', value: me.name },
    { op: 'set', path: 'board', value: BOARD }
  ]
  if (f.amount.value !== '') ops.push({ op: 'set', path: 'amount', value: +f.amount.value })
  request(id).update(ops)
  f.reset()
  log(`New request “${ops[0].value}”`)
})

// Transitions of the approvals state machine (config/collections.yaml) and
// the role each needs; the server is the one that enforces them.
const ACTIONS = {
  draft: [{ label: 'Submit', to: 'submitted', role: 'editor' }],
  submitted: [
    { label: 'Withdraw', to: 'draft', role: 'editor' },
    { label: 'Approve', to: 'approved', role: 'approver', kind: 'ok' },
    { label: 'Reject', to: 'rejected', role: 'approver', kind: 'bad' }
  ]
}

function renderBoard () {
  for (const col of document.querySelectorAll('.col .cards')) col.replaceChildren()
  const mine = ROLES[role.value]
  const held = new Map(board.results.map(it => [it.id, it]))
  const shown = new Map(board.results.map(it => [it.id, it.data]))
  // Requests this tab edits show its copy, pending edits included, once it
  // is as recent as the query's (a new one at once).
  for (const [name, d] of sync.docs) {
    const id = name.slice('approvals/'.length)
    const it = held.get(id)
    if (!name.startsWith('approvals/') || d.deleted || d.state.board !== BOARD) continue
    if (it ? d.synced && d.version >= it.version : d.synced || d.pending.length) shown.set(id, d.state)
  }
  for (const [id, s] of shown) {
    const d = sync.docs.get('approvals/' + id)
    const col = document.querySelector(`.col[data-status="${CSS.escape(s.status || 'draft')}"] .cards`)
    if (!col) continue
    const card = el('article', 'req')
    card.dataset.id = id
    card.append(el('h4', '', s.title || '(loading…)'))
    const meta = el('p', 'meta', [s.amount != null ? `€${Number(s.amount).toLocaleString()}` : '', s.author ? `by ${s.author}` : ''].filter(Boolean).join(' · '))
    card.append(meta)
    if (s.decision_note) card.append(el('p', 'note', s.decision_note))
    if (d?.pending.length) card.append(el('p', 'pending', 'sending…'))
    const actions = el('div', 'actions')
    for (const a of ACTIONS[s.status] || []) {
      const allowed = mine.includes(a.role)
      const b = el('button', `btn small ${a.kind || ''} ${allowed ? '' : 'locked'}`, a.label)
      b.type = 'button'
      b.title = allowed ? `${a.label} (${s.status} → ${a.to})` : `Needs the ${a.role} role — the server will refuse it`
      b.addEventListener('click', () => {
        const ops = [{ op: 'set', path: 'status', value: a.to }]
        if (a.role === 'approver') ops.push({ op: 'set', path: 'decision_note', value: `${a.label}d by ${me.name}` })
        request(id).update(ops)
      })
      actions.append(b)
    }
    card.append(actions)
    col.append(card)
  }
  for (const col of document.querySelectorAll('.col')) {
    const n = col.querySelector('.cards').children.length
    col.querySelector('h3').dataset.count = n
  }
  updateQueued()
}

// ---- bits -------------------------------------------------------------------

function el (tag, cls, text) {
  const e = document.createElement(tag)
  if (cls) e.className = cls.trim()
  if (text != null) e.textContent = text
  return e
}

function dot (p) {
  const d = el('span', 'pdot')
  d.style.background = p.color || '#999'
  d.title = p.name || 'someone'
  d.textContent = (p.name || '?')[0]
  return d
}

function avatar (p, self) {
  const a = dot(p)
  a.classList.add('avatar')
  if (self) a.classList.add('self')
  a.title = self ? `${p.name} (you)` : `${p.name}${p.field ? ' · in ' + p.field : ''}`
  return a
}

function who (client) {
  return client === sync.clientId ? 'You' : names.get(client) || 'Someone'
}

function log (text) {
  const list = $('#log')
  const top = list.firstChild
  const time = el('time', '', new Date().toLocaleTimeString())
  if (top?.dataset.text === text) {
    // Keystrokes of one field become one line with a count.
    const n = +top.dataset.n + 1
    top.dataset.n = n
    top.firstChild.replaceWith(time)
    top.lastChild.textContent = `×${n}`
    return
  }
  const li = el('li', '', text)
  li.dataset.text = text
  li.dataset.n = 1
  li.prepend(time)
  li.append(el('span', 'count'))
  list.prepend(li)
  while (list.children.length > 30) list.lastChild.remove()
}

function toast (text, kind = '') {
  const t = el('div', `toast ${kind}`, text)
  $('#toasts').append(t)
  setTimeout(() => t.classList.add('gone'), 4500)
  setTimeout(() => t.remove(), 5000)
}

log(`Connected as ${me.name} (${role.value}) to ${FORM}`)
