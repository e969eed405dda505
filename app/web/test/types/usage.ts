// Compiled with `tsc --noEmit` by test/types.test.mjs: uses the public API
// the way an application does. Each @ts-expect-error must stay an error.
import { connect, checkName, Doc, Sync, backoffDelay, Breaker, applyOps } from '../../client.js'
import type { Change, QueryItem, Removal, ChangeInfo, Rejection, StatusEvent, FieldOp, Json } from '../../client.js'
import autoglm from '../../client.js'

interface Profile {
  name: string
  age?: number
  tags: string[]
}

const sync: Sync = connect('https://sync.example.com', { token: 't', backoff: { max: 5000 } })
const d: Doc<Profile> = sync.doc<Profile>('profiles/u1')
const p: Profile = d.state
const confirmed: Profile = d.data
const name: string = d.state.name
void d.ready.then((doc: Doc<Profile>) => doc.state.tags.length)
d.on('change', (state: Profile, info: ChangeInfo) => {
  if (info.remote && info.change) {
    const c: Change = info.change
    const v: number = c.version
    const ops: FieldOp[] = c.ops
    const by: string = c.by
    void [v, ops, by, c.created, c.deleted, c.local, state.age]
  }
  if (info.reject) { const r: Rejection = info.reject; void r.code }
})
sync.registerSyncHook<Profile>('profiles/u1', {
  onRemoteUpdate (change: Change, local: Profile) { void [change.op, local.name] },
  onConflict (c) { return [{ op: 'set', path: 'name', value: c.state.name }] },
  onReject (r) { void r.details },
  retryPolicy: { maxRetries: 2, backoff: 'linear', base: 100 }
})
for (const [docName, doc] of sync.docs) void [docName.length, doc.pending.length, doc.version]
sync.on('status', (e: StatusEvent) => void [e.status, e.retryIn, e.breaker])
sync.on('error', m => void [m.code, m.details])
const untyped = sync.doc('forms/f1')
const title: Json | undefined = untyped.state.title
untyped.set('title', 'x').op.toFixed()
const n: string = checkName('forms/f1')
const wait: number = backoffDelay(3)
const b = new Breaker({ threshold: 2 })
const out = applyOps({}, [{ op: 'inc', path: 'n', value: 1 }])
void [p, confirmed, name, title, n, wait, b.state, out, autoglm.connect]

const q = sync.query<Profile>('profiles', { where: [['age', '>=', 18], ['tags', 'contains', 'team']], orderBy: [['age', 'desc'], ['name']], limit: 20 })
const first: QueryItem<Profile> | undefined = q.results[0]
q.on('added', (it, c) => void [it.data.name, c.snapshot])
q.on('changed', (it, c) => void [it.version, c.ops.length])
q.on('removed', (it, c: Removal) => void [it.id, c.why === 'limit'])
q.on('change', (results, it) => void [results.length, it.id])
void q.ready.then(results => results.map(r => r.data.tags))
q.close()
const offAll = sync.registerSyncHook<Profile>('profiles', {
  onRemoteUpdate (change, state) { void [change.version, state.name] },
  onRemove (change, last) { void [change.why, last.age] }
})
offAll()
void first
// @ts-expect-error not a query operator
sync.query('profiles', { where: [['age', '~=', 1]] })

// @ts-expect-error the state is a Profile: no such field
void d.state.nope
// @ts-expect-error a Profile is not assignable from another shape
const wrong: { id: number } = d.state
// @ts-expect-error hooks get a Change, which has no wire field `v`
sync.registerSyncHook('forms/f1', { onRemoteUpdate: c => c.v })
// @ts-expect-error inc takes a number
d.update([{ op: 'inc', path: 'age', value: 'one' }])
void wrong
