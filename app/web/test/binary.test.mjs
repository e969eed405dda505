// The binary codec against the vectors shared with the Go codec
// (app/protocol/testdata/binary_vectors.json).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { encodeFrames, decodeFrames, decodeJSON, crc8, FrameError } from '../client.js'

const vectors = JSON.parse(readFileSync(new URL('../../protocol/testdata/binary_vectors.json', import.meta.url)))
const hex = b => Buffer.from(b).toString('hex')
const bytes = h => new Uint8Array(Buffer.from(h, 'hex'))

test('CRC-8/SMBUS check value', () => {
  assert.equal(vectors.crc.algorithm, 'CRC-8/SMBUS')
  assert.equal(crc8(new TextEncoder().encode('123456789')).toString(16), vectors.crc.check)
})

for (const v of vectors.valid) {
  test(`valid vector ${v.name}: encodes to the same frames and decodes back`, () => {
    const m = JSON.parse(v.json)
    assert.equal(hex(encodeFrames(m)), v.hex)
    assert.deepEqual(decodeFrames(bytes(v.hex)), [m])
  })
}

// The compact forms (proto 2) only travel from the server: the client
// decodes both encodings of each to the same message.
for (const v of vectors.compact) {
  test(`compact vector ${v.name}: the frames decode as the JSON does`, () => {
    assert.deepEqual(decodeFrames(bytes(v.hex)), [decodeJSON(v.json)])
  })
}

test('a one-field set delta in the compact forms: binary at most 70 bytes, JSON at most 140', () => {
  const v = vectors.compact.find(v => v.name === 'delta_set_handle_author_known')
  const m = decodeJSON(v.json)
  assert.equal(m.ops[0].value.length, 40)
  console.log(`# one-field set of 40 bytes, compact: JSON ${v.json.length} bytes, binary ${v.hex.length / 2} bytes`)
  assert.ok(v.hex.length / 2 <= 70 && v.json.length <= 140, `binary ${v.hex.length / 2}, JSON ${v.json.length}`)
})

for (const v of vectors.invalid) {
  test(`invalid vector ${v.name}: refused with ${v.error}`, () => {
    assert.throws(() => decodeFrames(bytes(v.hex), v.max || undefined), e => e instanceof FrameError && e.code === v.error)
  })
}

test('at least the documented error codes are covered', () => {
  const codes = new Set(vectors.invalid.map(v => v.error))
  for (const c of ['truncated', 'bad_crc', 'unknown_opcode', 'too_large', 'bad_payload']) assert.ok(codes.has(c), c)
})

test('fields without a tag travel in ext and come back', () => {
  const m = { t: 'hello', client: 'c-1', proto: 1, device: { kind: 'tablet', dpi: 2 } }
  assert.deepEqual(decodeFrames(encodeFrames(m)), [m])
})

test('several messages in one buffer; an ArrayBuffer works too', () => {
  const a = encodeFrames({ t: 'ping', ts: 1 }); const b = encodeFrames({ t: 'sub', doc: 'forms/f1', since: 3 })
  const both = new Uint8Array([...a, ...b])
  assert.deepEqual(decodeFrames(both.buffer), [{ t: 'ping', ts: 1 }, { t: 'sub', doc: 'forms/f1', since: 3 }])
})

test('size goal: a single-field set delta of a short string is at most 120 bytes (JSON at most 300)', () => {
  const m = JSON.parse(vectors.valid.find(v => v.name === 'delta_set').json)
  const bin = encodeFrames(m).length
  const json = JSON.stringify(m).length
  console.log(`# single-field set delta: JSON ${json} bytes, binary ${bin} bytes`)
  assert.ok(bin <= 120 && json <= 300, `binary ${bin}, JSON ${json}`)
})

test('large integers up to 2^53 survive; beyond is refused', () => {
  const m = { t: 'op', doc: 'a/b', op: Number.MAX_SAFE_INTEGER, base: 2 ** 40, ops: [] }
  assert.deepEqual(decodeFrames(encodeFrames(m)), [m])
  assert.throws(() => encodeFrames({ t: 'op', op: 2 ** 60 }), e => e.code === 'not_encodable')
})
