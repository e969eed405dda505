// Type declarations of the Open-AutoGLM JavaScript client (client.js).
// Usage: docs/client.md. Wire protocol: docs/protocol.md.

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json }

/** A document's data: a JSON object. */
export type JsonObject = { [key: string]: Json }

/** A field operation; `path` is dot-separated object keys ("address.city"). */
export type FieldOp =
  | { op: 'set' | 'add' | 'remove'; path: string; value: Json }
  | { op: 'inc'; path: string; value: number }
  | { op: 'unset'; path: string }
  | { op: 'resolve'; path: string; value?: Json }
  /** Text fields: [site, clock, after, text] or [pos, text] (docs/protocol.md). */
  | { op: 'ins'; path: string; value: [string, number, string | number, string] | [number, string] }
  /** Text fields: [site, clock, count, …] or [pos, count]. */
  | { op: 'del'; path: string; value: (string | number)[] }

/** A character of a text field. */
export interface TextID { site: string; clock: number }

/** The sequence CRDT of a text field, as held in a copy of the data. */
export declare class Text {
  static of(data: { [key: string]: Json }, path: string): Text
  toString(): string
  readonly length: number
  maxClock(): number
  /** The id of the visible character at pos, or null. */
  idAt(pos: number): TextID | null
  /** The caret position right after id (null: the start); -1 for an unknown id. */
  caret(id: TextID | null): number
}

/** A text field of a document: positions count Unicode code points. */
export interface TextField {
  readonly value: string
  insert(pos: number, text: string): PendingOp | null
  delete(pos: number, count?: number): PendingOp | null
  /** Deletes count characters at pos and inserts text there, as one op. */
  splice(pos: number, count: number, text: string): PendingOp | null
  on(type: 'change', fn: (e: { index: number; deleted: number; inserted: string; value: string; remote: boolean }) => void): () => void
}

/** The ins op inserting text at pos of the text at path in data, as site. */
export declare function insertOp(data: { [key: string]: Json }, path: string, site: string, pos: number, text: string): FieldOp
/** The del op deleting count characters from pos (null: nothing to delete). */
export declare function deleteOp(data: { [key: string]: Json }, path: string, pos: number, count: number): FieldOp | null

/** A protocol message (docs/protocol.md); `t` selects which fields are set. */
export interface Message {
  t: string
  client?: string
  token?: string
  roles?: string[]
  session?: string
  node?: string
  hb?: number
  proto?: number
  doc?: string
  since?: number
  full?: boolean
  v?: number
  pv?: number
  op?: number
  base?: number
  hlc?: string
  ops?: FieldOp[]
  by?: string
  /** Compact forms (proto 2): the document's handle from its sub, in place of doc. */
  h?: number
  /** Compact forms (proto 2): the author's number on this connection (by comes with it once). */
  a?: number
  /** Compact forms (proto 2): a single set, {path: value}, in place of ops (JSON only). */
  set?: { [path: string]: Json }
  del?: boolean
  new?: boolean
  dup?: boolean
  data?: { [key: string]: Json } | null
  code?: string
  msg?: string
  details?: Json
  ts?: number
  [other: string]: unknown
}

/** An edit waiting for its ack (queued durably while offline). */
export interface PendingOp {
  t: 'op'
  doc: string
  op: number
  base: number
  hlc: string
  ops?: FieldOp[]
  del?: boolean
  sent?: boolean
}

/** A refusal of an op by the server. */
export interface Rejection {
  doc: string
  op: number
  /** Error code: conflict, forbidden, invalid_transition, invalid_op, ... */
  code: string
  msg: string
  details?: Json
  /** The refused field ops. */
  ops?: FieldOp[]
}

export interface Conflict<T = JsonObject> extends Rejection {
  /** The local state when the conflict arrived. */
  state: T
}

/**
 * One applied change of a document, as hooks and `change` listeners see it
 * (never a wire message).
 */
export interface Change {
  doc: string
  /** The document's version after the change. */
  version: number
  /** The field ops as the server applied them (its merge may have changed yours). */
  ops: FieldOp[]
  /** Client id of the author. */
  by: string
  /** The op id: set for this client's own ops only (others' deltas do not carry it). */
  op?: number
  /** The author's HLC stamp ("wall.logical.node"), when known. */
  hlc?: string
  /** The change created the document. */
  created: boolean
  /** The change deleted the document (a tombstone). */
  deleted: boolean
  /** An op of this client (its ack, or its delta after a reconnect). */
  local: boolean
}

/** A document entered a live query, or its copy was replaced: its whole state, no ops. */
export interface SnapshotChange {
  doc: string
  version: number
  ops: []
  snapshot: true
}

/** Why a document left a live query (docs/protocol.md, "Live queries"). */
export type RemovalReason = 'no_match' | 'deleted' | 'not_readable' | 'limit' | 'resync'

/** A document left a live query. */
export interface Removal {
  doc: string
  version: number
  ops: []
  deleted: boolean
  why: RemovalReason
}

/** A query condition: [path, op, value]. */
export type Where = [string, '==' | '!=' | '<' | '<=' | '>' | '>=' | 'in' | 'contains', Json]

export interface QuerySpec {
  where?: Where[]
  orderBy?: [string, ('asc' | 'desc')?][]
  /** 1..500: a window of the first `limit` results. */
  limit?: number
}

/** One document of a query's results. */
export interface QueryItem<T = JsonObject> {
  id: string
  version: number
  data: T
}

/** A live query (Sync.query): results follow the server. */
export declare class Query<T = JsonObject> {
  readonly collection: string
  readonly qid: string
  /** The matching documents the client may read, in the query's order (then by id). */
  readonly results: QueryItem<T>[]
  /** True once the server has sent the whole result (`synced`). */
  readonly synced: boolean
  /** Resolves with the results at the first `synced`. */
  readonly ready: Promise<QueryItem<T>[]>
  close(): void
  on(type: 'added', fn: (item: QueryItem<T>, change: SnapshotChange) => void): () => void
  on(type: 'changed', fn: (item: QueryItem<T>, change: Change | SnapshotChange) => void): () => void
  on(type: 'removed', fn: (item: QueryItem<T>, change: Removal) => void): () => void
  /** After each update; item is the document it concerned. */
  on(type: 'change', fn: (results: QueryItem<T>[], item: QueryItem<T>) => void): () => void
  on(type: 'synced', fn: (results: QueryItem<T>[]) => void): () => void
  /** A refusal of the query (bad_request, forbidden, too_large, access_revoked). */
  on(type: 'error', fn: (m: Message) => void): () => void
}

/** Hooks over all readable documents of a collection (registerSyncHook without "/id"). */
export interface CollectionHook<T = JsonObject> {
  /** A document entered (SnapshotChange) or was changed by another client. */
  onRemoteUpdate?(change: Change | SnapshotChange, state: T): void
  /** A document left: deleted, or no longer readable. */
  onRemove?(change: Removal, lastState: T): void
}

export interface RetryPolicy {
  maxRetries?: number
  backoff?: 'exponential' | 'linear' | 'none'
  /** Delay of the first retry in ms (default 500). */
  base?: number
}

export interface SyncHook<T = JsonObject> {
  /** A change by another client was applied; localState includes pending edits. */
  onRemoteUpdate?(change: Change, localState: T): void
  /** The server refused an op as a conflict; return field ops to retry with. */
  onConflict?(c: Conflict<T>): FieldOp[] | void | Promise<FieldOp[] | void>
  /** The server refused an op for another reason (forbidden, invalid_transition, ...). */
  onReject?(r: Rejection): void
  /** Retries of ops refused with a retryable code (unavailable, rate_limited, ...). */
  retryPolicy?: RetryPolicy
}

/** Key-value storage for the offline queue and document copies. */
export interface Storage {
  durable: boolean
  load(): Promise<Map<string, any>>
  put(key: string, value: any): Promise<unknown>
  del(key: string): Promise<unknown>
  /** Closes and deletes the store (IndexedDB). */
  drop?(): Promise<void>
}

export type TransportName = 'ws' | 'sse' | 'longpoll'

export interface ConnectOptions {
  /**
   * Stable client id (kept across reconnects). Default in browsers: the
   * browser profile's id, shared by its tabs one at a time (Web Locks), so a
   * queue left by a closed tab is sent by the next one; elsewhere random.
   */
  clientId?: string
  token?: string
  /** Called after close code 4003 (token expired) for a fresh token. */
  refreshToken?(): string | Promise<string>
  /** Roles claimed in hello; honoured only by servers without authentication. */
  roles?: string[]
  /** 'auto' (default): WebSocket, else SSE, else long-polling. */
  transport?: 'auto' | TransportName
  /** Binary frames on WebSocket (default true; false: JSON text frames). */
  binary?: boolean
  /** WebSocket implementation (Node 20: e.g. the `ws` package); default globalThis.WebSocket. */
  WebSocket?: any
  fetch?: typeof fetch
  /** Default: IndexedDB in browsers, memory elsewhere. */
  storage?: Storage
  /** Start disconnected (edits queue until setOffline(false)). */
  offline?: boolean
  /** Published with form focus by bindForm, e.g. {name, color}. */
  presence?: { [key: string]: Json }
  /** Reconnect delays in ms (default base 250, max 5000). */
  backoff?: { base?: number; max?: number }
  /** Breaker over server overload signals (default threshold 5, cooldown 15000 ms). */
  breaker?: { threshold?: number; cooldown?: number }
  /** A connection that stays up this long (ms) counts as healthy (default 5000). */
  stableAfter?: number
  /** Latency probe interval in ms (default 5000). */
  pingInterval?: number
  /**
   * Trace context for ops (docs/observability.md): a function returning the
   * page tracer's current W3C traceparent, or true to send a span of the
   * page's trace (its <meta name="traceparent">) or of a new trace per op.
   * Default: no trace context.
   */
  trace?: boolean | (() => string | undefined)
  /** Injected clock, randomness and timers (tests). */
  now?: () => number
  random?: () => number
  timers?: {
    setTimeout: typeof setTimeout; clearTimeout: typeof clearTimeout
    setInterval: typeof setInterval; clearInterval: typeof clearInterval
  }
}

export type Status = 'connecting' | 'online' | 'offline' | 'paused' | 'stopped' | 'closed'

export interface StatusEvent {
  status: Status
  /** ws, ws+bin, sse or longpoll */
  transport: string
  breaker: 'closed' | 'open' | 'half-open'
  code?: number
  reason?: string
  retryIn?: number
  node?: string
}

/** Why a document's local state changed; one of the flags is set. */
export interface ChangeInfo {
  /** An edit of this client (not yet acknowledged). */
  local?: boolean
  /** A change by another client: see `change`. */
  remote?: boolean
  /** This client's op was acknowledged: see `change` (absent for a duplicate). */
  ack?: boolean
  /** A snapshot replaced the confirmed state. */
  snapshot?: boolean
  /** The stored copy and queue loaded. */
  loaded?: boolean
  /** An op of this client was refused and rolled back. */
  reject?: Rejection
  change?: Change
}

/** A document; `T` is the shape of its data (`sync.doc<Profile>('profiles/u1')`). */
export declare class Doc<T = JsonObject> {
  readonly name: string
  /** Confirmed version (the last one the server delivered). */
  readonly version: number
  /** Confirmed data, without pending edits. */
  readonly data: T
  readonly deleted: boolean
  /** Edits not yet acknowledged, in op order. */
  readonly pending: PendingOp[]
  /** Presence of other clients on this document, by client id. */
  readonly peers: Map<string, { [key: string]: Json }>
  readonly synced: boolean
  /** Resolves once the document has caught up with the server the first time. */
  readonly ready: Promise<Doc<T>>
  /** Local view: confirmed data with pending edits applied. */
  readonly state: T
  get(path: string): Json | undefined
  set(path: string, value: Json): PendingOp
  unset(path: string): PendingOp
  increment(path: string, n?: number): PendingOp
  add(path: string, value: Json): PendingOp
  remove(path: string, value: Json): PendingOp
  /** Several field ops as one atomic op (one version). */
  update(ops: FieldOp[]): PendingOp
  /** The text field at path (ins/del edits that merge with concurrent typing). */
  text(path: string): TextField
  delete(): PendingOp
  /** Sets this client's presence on the document; null clears it. */
  presence(data: { [key: string]: Json } | null): void
  on(type: 'change', fn: (state: T, info: ChangeInfo) => void): () => void
  on(type: 'presence', fn: (peers: Map<string, { [key: string]: Json }>) => void): () => void
  on(type: 'synced', fn: (doc: Doc<T>) => void): () => void
}

export declare class Sync {
  /** This client's id ('' until `ready` in a browser: it comes from the profile's pool). */
  readonly clientId: string
  /** The documents opened so far, by name. */
  readonly docs: Map<string, Doc<any>>
  /** Base URLs of the service (http(s)) and of its sync endpoint (ws(s)). */
  readonly httpURL: string
  readonly wsURL: string
  readonly status: Status
  /** ws, ws+bin, sse or longpoll once connected. */
  readonly transport: string
  /** Last measured round trip in ms. */
  readonly rtt: number | null
  readonly breaker: Breaker
  /** Resolves when stored state (offline queue, document copies) has loaded. */
  readonly ready: Promise<void>
  /** Throws an Error with code 'invalid_name' for a name that is not "collection/id". */
  doc<T = JsonObject>(name: string): Doc<T>
  registerSyncHook<T = JsonObject>(name: `${string}/${string}`, hook: SyncHook<T>): () => void
  /** A collection name (no "/id"): hooks over all its readable documents, as a live query. */
  registerSyncHook<T = JsonObject>(collection: string, hook: CollectionHook<T>): () => void
  /** A live query (docs/protocol.md, "Queries"); throws 'invalid_name' for a bad collection name. */
  query<T = JsonObject>(collection: string, spec?: QuerySpec): Query<T>
  /** text: names of fields edited as text fields (also any field holding text metadata). */
  bindForm(form: HTMLFormElement, name: string, opts?: { presence?: { [key: string]: Json }; text?: string[] }): () => void
  setOffline(offline: boolean): void
  /** Reconnects at once, optionally with a new token or roles; queued edits replay. */
  reconnect(opts?: { token?: string; roles?: string[] }): void
  close(): void
  on(type: 'status', fn: (e: StatusEvent) => void): () => void
  on(type: 'latency', fn: (rtt: number) => void): () => void
  on(type: 'reject', fn: (r: Rejection) => void): () => void
  /** Server errors, storage failures, and origin_not_allowed (`details.origin`) for a page whose origin the server refuses. */
  on(type: 'error', fn: (m: Message) => void): () => void
  on(type: 'disconnect', fn: (e: { code: number; reason: string }) => void): () => void
}

export declare function connect(url: string, options?: ConnectOptions): Sync

export declare class Breaker {
  constructor(opts?: { threshold?: number; cooldown?: number; now?: () => number })
  readonly state: 'closed' | 'open' | 'half-open'
  readonly failures: number
  allow(): boolean
  retryIn(): number
  success(): void
  failure(): void
}

export declare function backoffDelay(attempt: number, opts?: { base?: number; max?: number }, random?: () => number): number
export declare function chooseTransports(option?: 'auto' | TransportName, env?: { WebSocket?: unknown; fetch?: unknown; ReadableStream?: unknown }): TransportName[]
export declare function encodeFrames(m: Message): Uint8Array
export declare function decodeFrames(frames: Uint8Array | ArrayBuffer, maxMessage?: number): Message[]
/** Parses a JSON-encoded message, restoring what the encoding leaves out (pv, the author's hlc node, a single set). */
export declare function decodeJSON(text: string): Message
export declare function crc8(bytes: Uint8Array): number
export declare class FrameError extends Error {
  /** truncated, bad_crc, unknown_opcode, too_large, bad_payload or not_encodable */
  readonly code: string
}
/**
 * Applies field ops to plain data in place, exactly as the server's copy does
 * (fields are own properties: `toString` or `__proto__` are ordinary fields).
 * An op the server would refuse throws an Error whose `code` is `invalid_op`,
 * leaving data unchanged.
 */
export declare function applyOps(data: { [key: string]: Json }, ops: FieldOp[]): { [key: string]: Json }
/** The value at a dot path (own fields only), or undefined. */
export declare function getPath(data: { [key: string]: Json }, path: string): Json | undefined
export declare function canon(v: Json): string
/** Returns name, or throws an Error with code 'invalid_name' unless it is "collection/id" as the server accepts it. */
export declare function checkName(name: string): string
export declare function memoryStorage(): Storage
export declare function indexedDBStorage(name: string, idb?: IDBFactory): Storage
export declare const transports: Record<TransportName, unknown>

declare const openAutoglm: { connect: typeof connect }
export default openAutoglm
