// Prints the client's size: source, minified, and minified + gzip. With
// --max=<bytes> it fails when minified + gzip exceeds the budget.
import { readFileSync } from 'node:fs'
import { gzipSync } from 'node:zlib'
import { fileURLToPath } from 'node:url'
import { transform } from 'esbuild'

export async function clientSize () {
  const src = readFileSync(fileURLToPath(new URL('../client.js', import.meta.url)), 'utf8')
  const { code } = await transform(src, { minify: true, format: 'esm', target: 'es2022' })
  return { source: src.length, minified: code.length, gzip: gzipSync(code, { level: 9 }).length }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const s = await clientSize()
  console.log(`client.js: ${s.source} bytes source, ${s.minified} minified, ${s.gzip} minified+gzip`)
  const max = process.argv.find(a => a.startsWith('--max='))
  if (max && s.gzip > +max.slice(6)) {
    console.error(`over the budget of ${max.slice(6)} bytes`)
    process.exit(1)
  }
}
