// End-to-end tests of the demo page in Debian's Chromium, driven by
// playwright-core, against a real replica (AUTOGLM_URL; `make test-browser`
// starts one). Screenshots go to ARTIFACTS (app/web/e2e/artifacts).
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { chromium } from 'playwright-core'

const URL = process.env.AUTOGLM_URL
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium'
const ARTIFACTS = process.env.ARTIFACTS || new globalThis.URL('./artifacts', import.meta.url).pathname
const uid = () => Math.random().toString(36).slice(2, 8)

let browser
before(async () => {
  assert.ok(URL, 'AUTOGLM_URL must name a running server; `make test-browser` starts one')
  mkdirSync(ARTIFACTS, { recursive: true })
  // Playwright gives every launch a fresh temporary profile (user data dir).
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']
  })
})
after(() => browser?.close())

async function open (query, { role, initScript } = {}) {
  const ctx = await browser.newContext({ viewport: { width: 1360, height: 900 } })
  if (initScript) await ctx.addInitScript(initScript)
  if (role) await ctx.addInitScript(r => sessionStorage.setItem('demo.role', r), role)
  const page = await ctx.newPage()
  const errors = []
  page.on('pageerror', e => errors.push(e))
  page.errors = errors
  await page.goto(`${URL}/?${query}`)
  await page.waitForSelector('#conn[data-status="online"]', { timeout: 10_000 })
  return page
}

const shot = (page, name) => page.screenshot({ path: join(ARTIFACTS, name + '.png'), fullPage: true })

// finish saves a screenshot of each page under its name, checks that no
// page raised an uncaught error, and closes the pages' browser contexts.
async function finish (pages) {
  for (const [name, page] of Object.entries(pages)) await shot(page, name)
  assert.deepEqual(Object.values(pages).flatMap(p => p.errors), [])
  for (const page of Object.values(pages)) await page.context().close()
}
const value = (page, sel) => page.$eval(sel, el => el.value)
const serverDoc = async doc => (await (await fetch(`${URL}/v1/docs/${doc}`)).json()).data

async function typeAndMeasure (from, to, sel, text) {
  await from.fill(sel, '')
  await from.type(sel, text)
  const start = Date.now()
  await to.waitForFunction(([s, v]) => document.querySelector(s).value === v, [sel, text], { timeout: 1000 })
  return Date.now() - start
}

test('typing in one browser shows in the other within a second, with presence and latency', async () => {
  const q = `form=forms/e2e-${uid()}&board=e2e-${uid()}`
  const a = await open(q); const b = await open(q)
  const ms = await typeAndMeasure(a, b, '#f-title', 'Quarterly offsite')
  console.log(`# last keystroke reached the other browser after ≤ ${ms} ms`)
  await a.selectOption('#f-priority', 'high')
  await a.fill('#f-budget', '2500')
  await a.check('input[name=tags][value=customer]')
  await b.waitForFunction(() => document.querySelector('#f-priority').value === 'high' &&
    document.querySelector('#f-budget').value === '2500' &&
    document.querySelector('input[name=tags][value=customer]').checked, null, { timeout: 1000 })

  // Presence: B sees A's dot next to the field A is in.
  await a.focus('#f-notes')
  await b.waitForSelector('.presence[data-field="notes"] .pdot', { timeout: 1000 })
  // The field being typed in is not overwritten by remote changes.
  await b.focus('#f-owner')
  await b.type('#f-owner', 'Bo')
  await a.fill('#f-notes', 'Bring laptops')
  await b.waitForFunction(() => document.querySelector('#f-notes').value === 'Bring laptops', null, { timeout: 1000 })
  assert.equal(await value(b, '#f-owner'), 'Bo')
  await a.waitForFunction(() => /\d+ ms/.test(document.querySelector('#conn-rtt').textContent), null, { timeout: 10_000 })
  assert.match(await a.textContent('#conn-transport'), /^ws/)
  await finish({ 'form-a': a, 'form-b': b })
})

test('offline switch: edits queue, and switching back merges them per the collection policy', async () => {
  const form = `forms/e2e-${uid()}`
  const q = `form=${form}&board=e2e-${uid()}`
  const a = await open(q); const b = await open(q)
  await typeAndMeasure(a, b, '#f-title', 'start')

  await a.click('label.switch')
  await a.waitForSelector('#conn[data-status="paused"]')
  await a.fill('#f-title', 'A offline')
  await a.fill('#f-notes', 'only A')
  await a.check('input[name=tags][value=urgent]')
  await a.click('#respond'); await a.click('#respond')
  await a.waitForSelector('#queued:not([hidden])')
  assert.match(await a.textContent('#queued'), /edits? queued/)
  await shot(a, 'offline-queued')

  // B edits while A is away; B's title is the later write.
  await b.fill('#f-title', 'B online')
  await b.fill('#f-owner', 'Bo')
  await b.check('input[name=tags][value=customer]')
  await b.click('#respond')
  await b.waitForFunction(() => document.querySelector('#queued').hidden, null, { timeout: 5000 })
  assert.equal(await value(a, '#f-title'), 'A offline', 'A saw nothing while offline')

  await a.click('label.switch')
  await a.waitForFunction(() => document.querySelector('#queued').hidden && document.querySelector('#f-owner').value === 'Bo', null, { timeout: 5000 })
  // The title is a text field: both people replaced "start", so both of
  // their words are there (the greater site id first), each in one piece.
  const want = { notes: 'only A', owner: 'Bo', tags: ['customer', 'urgent'], responses: 3 }
  let data
  for (let i = 0; i < 50; i++) {
    data = await serverDoc(form)
    if (data.responses === 3 && data.notes === 'only A' && data.title.length === 17) break
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  for (const [k, v] of Object.entries(want)) assert.deepEqual(data[k], v, k)
  assert.ok(['A offlineB online', 'B onlineA offline'].includes(data.title), data.title)
  want.title = data.title
  for (const p of [a, b]) {
    await p.waitForFunction(w => document.querySelector('#f-title').value === w.title &&
      document.querySelector('#f-notes').value === w.notes &&
      document.querySelector('#responses').textContent === String(w.responses) &&
      document.querySelector('input[name=tags][value=urgent]').checked &&
      document.querySelector('input[name=tags][value=customer]').checked, want, { timeout: 5000 })
  }
  await shot(a, 'merged-a')
  await shot(b, 'merged-b')
  await a.context().close(); await b.context().close()
})

test('two people type into one textarea at once, one of them offline for a while: both texts, carets stay put', async () => {
  const form = `forms/e2e-${uid()}`
  const q = `form=${form}&board=e2e-${uid()}`
  const a = await open(q); const b = await open(q)
  const caretAt = (p, pos) => p.$eval('#f-notes', (el, pos) => { el.focus(); el.setSelectionRange(pos, pos) }, pos)
  const caret = p => p.$eval('#f-notes', el => [el.selectionStart, el.selectionEnd, document.activeElement === el])
  const both = v => Promise.all([a, b].map(p => p.waitForFunction(v => document.querySelector('#f-notes').value === v, v, { timeout: 10_000 })))

  await caretAt(a, 0)
  await a.keyboard.type('one two')
  await both('one two')

  // At the same time: A types after "one", B at the end.
  await caretAt(a, 3); await caretAt(b, 7)
  await Promise.all([a.keyboard.type(' alpha', { delay: 15 }), b.keyboard.type(' beta', { delay: 15 })])
  await both('one alpha two beta')
  assert.deepEqual(await caret(a), [9, 9, true], 'A\'s caret stays after its word')
  assert.deepEqual(await caret(b), [18, 18, true], 'B\'s caret stays after its word')

  // A goes offline and keeps typing; B types meanwhile; A comes back.
  await a.evaluate(() => window.autoglm.setOffline(true))
  await a.waitForSelector('#conn[data-status="paused"]')
  await Promise.all([a.keyboard.type(' gamma', { delay: 15 }), b.keyboard.type(' delta', { delay: 15 })])
  await b.waitForFunction(() => document.querySelector('#queued').hidden, null, { timeout: 5000 })
  assert.equal(await value(a, '#f-notes'), 'one alpha gamma two beta', 'A saw nothing while offline')
  await shot(a, 'text-offline-a')
  await a.evaluate(() => window.autoglm.setOffline(false))
  const final = 'one alpha gamma two beta delta'
  await both(final)
  assert.deepEqual(await caret(a), [15, 15, true], 'A\'s caret is still after "gamma"')
  assert.deepEqual(await caret(b), [final.length, final.length, true], 'B\'s caret is still at its end')
  let data
  for (let i = 0; i < 50 && data?.notes !== final; i++) {
    data = await serverDoc(form)
    if (data?.notes !== final) await new Promise(resolve => setTimeout(resolve, 100))
  }
  assert.equal(data.notes, final)
  await finish({ 'text-merged-a': a, 'text-merged-b': b })
})

test('the offline queue survives a reload (IndexedDB) and replays with the original op ids', async () => {
  const form = `forms/e2e-${uid()}`
  const a = await open(`form=${form}`)
  await a.click('label.switch')
  await a.waitForSelector('#conn[data-status="paused"]')
  await a.fill('#f-owner', 'queued before reload')
  await a.waitForSelector('#queued:not([hidden])')
  const queued = await a.evaluate(d => window.autoglm.doc(d).pending.map(p => p.op), form)
  await a.waitForTimeout(300) // let IndexedDB commit
  await a.reload()
  await a.waitForSelector('#conn[data-status="online"]', { timeout: 10_000 })
  await a.waitForFunction(() => document.querySelector('#queued').hidden, null, { timeout: 5000 })
  assert.equal((await serverDoc(form)).owner, 'queued before reload')
  const log = await (await fetch(`${URL}/v1/docs/${form}/changes?since=0`)).json()
  const ops = (log.changes || []).map(c => c.op)
  if (ops.length) assert.deepEqual(ops, queued)
  await a.context().close()
})

for (const [name, query, initScript, want] of [
  ['SSE, with WebSocket removed from the page', '', () => { delete window.WebSocket }, 'sse'],
  ['long-polling, forced by the transport option', 'transport=longpoll', null, 'longpoll']
]) {
  test(`fallback: ${name} still syncs`, async () => {
    const q = `form=forms/e2e-${uid()}&board=e2e-${uid()}&${query}`
    const fb = await open(q, { initScript })
    const ws = await open(q)
    assert.equal(await fb.textContent('#conn-transport'), want)
    const ms1 = await typeAndMeasure(ws, fb, '#f-title', `to ${want}`)
    const ms2 = await typeAndMeasure(fb, ws, '#f-notes', `from ${want}`)
    console.log(`# ${want}: ${ms1} ms in, ${ms2} ms out`)
    await fb.focus('#f-owner')
    await ws.waitForSelector('.presence[data-field="owner"] .pdot', { timeout: 2000 })
    await shot(fb, `fallback-${want}`)
    assert.deepEqual(fb.errors, [])
    await fb.context().close(); await ws.context().close()
  })
}

test('approval board: a live query of the board\'s requests; roles in the dropdown; the server refuses what a role may not do', async () => {
  const boardName = `e2e-${uid()}`
  const q = `form=forms/e2e-${uid()}&board=${boardName}`
  const editor = await open(q, { role: 'editor' })
  const approver = await open(q, { role: 'approver' })
  assert.equal(await approver.$eval('#role', el => el.value), 'approver')

  await editor.fill('#new-request input[name=title]', 'Laptop for Mia')
  await editor.fill('#new-request input[name=amount]', '1200')
  await editor.click('#new-request button')
  const card = '.col[data-status="draft"] .req'
  await approver.waitForSelector(`${card}:has-text("Laptop for Mia")`, { timeout: 2000 })
  await editor.click(`${card} button:has-text("Submit")`)
  const submitted = '.col[data-status="submitted"] .req'
  await approver.waitForSelector(submitted, { timeout: 2000 })

  // The editor's approve button is marked as locked; pressing it anyway is
  // refused by the server, and the refusal is shown.
  const locked = `${submitted} button:has-text("Approve")`
  await editor.waitForSelector(locked)
  assert.match(await editor.getAttribute(locked, 'class'), /locked/)
  await editor.click(locked)
  await editor.waitForSelector('.toast.error:has-text("forbidden")', { timeout: 2000 })
  await shot(editor, 'board-forbidden')
  assert.equal(await editor.locator(submitted).count(), 1, 'still submitted')

  await approver.click(`${submitted} button:has-text("Approve")`)
  for (const p of [editor, approver]) await p.waitForSelector('.col[data-status="approved"] .req:has-text("Approved by")', { timeout: 2000 })
  await shot(approver, 'board-approved')

  // The board is a query, not a list of ids: a request written elsewhere
  // (REST) with this board's name enters it, one of another board does not,
  // and a page opened later gets the whole result.
  const put = (id, data) => fetch(`${URL}/v1/docs/approvals/${id}`, { method: 'PUT', headers: { 'content-type': 'application/json', 'x-roles': 'editor' }, body: JSON.stringify(data) })
  const elsewhere = await put(`e2e-${uid()}`, { title: 'Desk for Noor', status: 'draft', board: boardName })
  assert.ok(elsewhere.ok, `PUT ${elsewhere.status}: ${await elsewhere.text()}`)
  assert.ok((await put(`e2e-${uid()}`, { title: 'Chair for Omar', status: 'draft', board: 'e2e-other-' + uid() })).ok)
  await approver.waitForSelector('.col[data-status="draft"] .req:has-text("Desk for Noor")', { timeout: 2000 })
  const late = await open(q, { role: 'approver' })
  await late.waitForSelector('.col[data-status="approved"] .req:has-text("Laptop for Mia")', { timeout: 2000 })
  await late.waitForSelector('.col[data-status="draft"] .req:has-text("Desk for Noor")', { timeout: 2000 })
  assert.equal(await late.locator('.req').count(), 2, 'only this board\'s requests')
  assert.equal(await late.locator('.req:has-text("Chair for Omar")').count(), 0)

  // Switching the role reconnects with it.
  await editor.selectOption('#role', 'approver')
  await editor.waitForSelector('#conn[data-status="online"]', { timeout: 5000 })
  for (const p of [editor, approver, late]) assert.deepEqual(p.errors, [])
  await editor.context().close(); await approver.context().close(); await late.context().close()
})
