// Browser tests of what must survive: an edit made offline in a tab that is
// then closed, and a server outage. Chromium via playwright-core against the
// replica of `make test-browser`; CONTROL_URL stops and restarts it.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { chromium } from 'playwright-core'

const URL = process.env.AUTOGLM_URL
const CONTROL = process.env.CONTROL_URL
const uid = () => Math.random().toString(36).slice(2, 8)

let browser
before(async () => {
  assert.ok(URL && CONTROL, 'AUTOGLM_URL and CONTROL_URL are set by `make test-browser`')
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']
  })
})
after(() => browser?.close())

// profileTest is a test whose body runs in a new browser profile (ctx)
// with a new form document; the profile is closed after the body, even a
// failed one.
function profileTest (name, body) {
  test(name, async () => {
    const ctx = await browser.newContext()
    try {
      await body(ctx, `forms/e2e-${uid()}`)
    } finally {
      await ctx.close()
    }
  })
}

// A browser context is one browser profile: its pages are tabs sharing
// IndexedDB, localStorage and Web Locks.
async function tab (ctx, form) {
  const page = await ctx.newPage()
  await page.goto(`${URL}/?form=${form}&board=e2e-${uid()}`)
  await page.waitForSelector('#conn[data-status="online"]', { timeout: 10_000 })
  return page
}

// editOffline switches the tab offline, sets the owner field, adds one
// response (a counter: sent twice it would count twice) and returns
// {client, ops}: who queued which op ids.
async function editOffline (page, form, value) {
  await page.click('label.switch')
  await page.waitForSelector('#conn[data-status="paused"]')
  await page.fill('#f-owner', value)
  await page.click('#respond')
  await page.waitForSelector('#queued:not([hidden])')
  const q = await page.evaluate(d => ({ client: window.autoglm.clientId, ops: window.autoglm.doc(d).pending.map(p => p.op) }), form)
  // The queue write is an IndexedDB transaction: wait until it is stored.
  await page.waitForFunction(([id, op]) => new Promise(resolve => {
    const r = indexedDB.open('autoglm-' + id)
    r.onsuccess = () => {
      const get = r.result.transaction('kv').objectStore('kv').get('op:' + op)
      get.onsuccess = () => { r.result.close(); resolve(!!get.result) }
    }
  }), [q.client, q.ops.at(-1)])
  return q
}

// serverDoc polls the document on the server until want(data) holds.
async function serverDoc (form, want) {
  let data
  for (const end = Date.now() + 10_000; Date.now() < end;) {
    const res = await fetch(`${URL}/v1/docs/${form}`)
    data = res.ok ? (await res.json()).data : null
    if (data && want(data)) return data
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  assert.fail(`${form} on the server: ${JSON.stringify(data)}`)
}

// countedOnce waits until the page has nothing queued and every document
// caught up, then checks the server counted the one response once.
async function countedOnce (page, form) {
  await page.waitForFunction(() => window.autoglm.docs.size && [...window.autoglm.docs.values()].every(d => d.synced && !d.pending.length), null, { timeout: 10_000 })
  assert.equal((await serverDoc(form, () => true)).responses, 1, 'counted once')
}

profileTest('an offline edit in a tab that is then closed is sent by the next tab, exactly once', async (ctx, form) => {
  const a = await tab(ctx, form)
  const q = await editOffline(a, form, 'from a closed tab')
  await a.close()
  const b = await tab(ctx, form)
  assert.equal(await b.evaluate(() => window.autoglm.clientId), q.client, 'the next tab takes the profile\'s client id')
  await b.waitForFunction(() => document.querySelector('#queued').hidden && document.querySelector('#f-owner').value === 'from a closed tab', null, { timeout: 10_000 })
  await serverDoc(form, d => d.owner === 'from a closed tab' && d.responses === 1)
  // A reload of the next tab replays nothing again.
  await b.reload()
  await b.waitForSelector('#conn[data-status="online"]', { timeout: 10_000 })
  await countedOnce(b, form)
})

profileTest('a tab left open sends the queue of a tab closed beside it; tabs open together use distinct ids', async (ctx, form) => {
  const a = await tab(ctx, form)
  const b = await tab(ctx, form)
  const ids = await Promise.all([a, b].map(p => p.evaluate(() => window.autoglm.clientId)))
  assert.notEqual(ids[0], ids[1])
  const q = await editOffline(a, form, 'left by tab A')
  await a.close()
  assert.ok(q.ops.length)
  await b.waitForFunction(() => document.querySelector('#f-owner').value === 'left by tab A', null, { timeout: 10_000 })
  await serverDoc(form, d => d.owner === 'left by tab A' && d.responses === 1)
  // The next tab takes A's id and finds nothing left to send.
  const c = await tab(ctx, form)
  assert.equal(await c.evaluate(() => window.autoglm.clientId), q.client)
  await countedOnce(c, form)
})

profileTest('a queue database of an earlier client version is sent once and removed', async (ctx, form) => {
  const a = await tab(ctx, form)
  const old = 'c-old' + uid()
  // The layout earlier versions wrote: one database per tab, "kv" store.
  await a.evaluate(([name, doc]) => new Promise((resolve, reject) => {
    const r = indexedDB.open('autoglm-' + name, 1)
    r.onupgradeneeded = () => r.result.createObjectStore('kv')
    r.onsuccess = () => {
      const t = r.result.transaction('kv', 'readwrite')
      t.objectStore('kv').put({ nextOp: 1 }, 'meta')
      t.objectStore('kv').put({ t: 'op', doc, op: 1, base: 0, hlc: `${Date.now()}.0.${name}`, ops: [{ op: 'set', path: 'owner', value: 'from an old tab' }, { op: 'inc', path: 'responses', value: 1 }], sent: true }, 'op:1')
      t.oncomplete = () => { r.result.close(); resolve() }
    }
    r.onerror = () => reject(r.error)
  }), [old, form])
  const b = await tab(ctx, form)
  await serverDoc(form, d => d.owner === 'from an old tab' && d.responses === 1)
  await b.waitForFunction(n => indexedDB.databases().then(dbs => !dbs.some(d => d.name === 'autoglm-' + n)), old, { timeout: 10_000, polling: 200 })
})

profileTest('after a 10 s outage of the server the page is online again within 6 s', async (ctx, form) => {
  const page = await tab(ctx, form)
  const post = async path => assert.equal((await fetch(CONTROL + path, { method: 'POST' })).status, 200)
  await post('/stop')
  const down = Date.now()
  await page.waitForSelector('#conn:not([data-status="online"])', { timeout: 10_000 })
  await page.fill('#f-notes', 'typed during the outage')
  await page.click('#respond')
  // The outage itself lasts 10 s; the page keeps retrying meanwhile.
  await new Promise(resolve => setTimeout(resolve, 10_000 - (Date.now() - down)))
  await post('/start')
  const back = Date.now()
  await page.waitForSelector('#conn[data-status="online"]', { timeout: 6000 })
  const ms = Date.now() - back
  console.log(`# online ${ms} ms after the server was back (outage ${back - down} ms)`)
  assert.ok(ms < 6000, `${ms} ms`)
  await serverDoc(form, d => d.notes === 'typed during the outage' && d.responses === 1)
})

test('a page on an origin the server does not allow is told so (origin_not_allowed), not left retrying', async t => {
  // The page and a copy of the client come from another origin (another
  // port); the replica allows only its own.
  const { createServer } = await import('node:http')
  const { readFileSync } = await import('node:fs')
  const client = readFileSync(new globalThis.URL('../dist/client.min.js', import.meta.url))
  const page = `<script type="module">
    import { connect } from '/client.js'
    const sync = connect(${JSON.stringify(URL)})
    window.seen = { errors: [], statuses: [] }
    sync.on('error', e => window.seen.errors.push({ code: e.code, origin: e.details?.origin }))
    sync.on('status', e => window.seen.statuses.push([e.status, e.code]))
  </script>`
  const srv = createServer((req, res) => {
    const js = req.url === '/client.js'
    res.writeHead(200, { 'content-type': js ? 'text/javascript' : 'text/html' })
    res.end(js ? client : page)
  })
  await new Promise(resolve => srv.listen(0, '127.0.0.1', resolve))
  t.after(() => srv.close())
  const origin = `http://127.0.0.1:${srv.address().port}`
  const ctx = await browser.newContext()
  const p = await ctx.newPage()
  await p.goto(origin + '/')
  await p.waitForFunction(() => window.seen?.statuses.some(([s]) => s === 'stopped'), null, { timeout: 15_000 })
  const seen = await p.evaluate(() => window.seen)
  assert.deepEqual(seen.errors, [{ code: 'origin_not_allowed', origin }])
  assert.deepEqual(seen.statuses.at(-1), ['stopped', 4502])
  await ctx.close()
})
