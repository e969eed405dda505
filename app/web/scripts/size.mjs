// Prints the client's size: source, the served minified build
// (dist/client.min.js), and that build gzipped. With --max=<bytes> it fails
// when minified + gzip exceeds the budget.
import { readFileSync } from 'node:fs'
import { gzipSync } from 'node:zlib'
import { fileURLToPath } from 'node:url'

export function clientSize () {
  const read = p => readFileSync(fileURLToPath(new URL(p, import.meta.url)))
  const min = read('../dist/client.min.js')
  return { source: read('../client.js').length, minified: min.length, gzip: gzipSync(min, { level: 9 }).length }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const s = clientSize()
  console.log(`client.js: ${s.source} bytes source, ${s.minified} minified, ${s.gzip} minified+gzip`)
  const max = process.argv.find(a => a.startsWith('--max='))
  if (max && s.gzip > +max.slice(6)) {
    console.error(`over the budget of ${max.slice(6)} bytes`)
    process.exit(1)
  }
}
