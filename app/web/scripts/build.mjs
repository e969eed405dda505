// Builds the client for the npm package and the service (docs/client.md,
// "Packaging"): dist/client.js (ESM), dist/client.min.js (minified ESM)
// with dist/client.min.js.map, for the npm package (prepack). dist/ is not
// committed: the service minifies client.js itself with esbuild's Go API
// (app/web/web.go), so a Go build needs no Node.
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

const here = p => fileURLToPath(new URL(p, import.meta.url))
export const outputs = ['client.js', 'client.min.js', 'client.min.js.map']

/** The build outputs by file name (in memory). */
export async function buildClient () {
  const common = { entryPoints: [here('../client.js')], bundle: true, format: 'esm', target: 'es2022', platform: 'neutral', write: false, logLevel: 'silent', outdir: here('../dist'), legalComments: 'none' }
  const esm = await build(common)
  const min = await build({ ...common, minify: true, sourcemap: 'linked', sourcesContent: true, entryNames: '[name].min' })
  const out = {}
  for (const f of [...esm.outputFiles, ...min.outputFiles]) out[f.path.split('/').pop()] = f.text
  return out
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const out = await buildClient()
  mkdirSync(here('../dist'), { recursive: true })
  for (const name of outputs) writeFileSync(here('../dist/' + name), out[name])
  const size = readFileSync(here('../dist/client.min.js')).length
  console.error(`dist/: ${outputs.join(', ')} (client.min.js ${size} bytes)`)
}
