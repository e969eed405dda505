// The npm package: `npm pack` (whose prepack builds dist/) makes a tarball
// with exactly the published files; installed offline into a scratch
// project, both entry points import under the package name and a
// TypeScript file type-checks against it. (The service minifies client.js
// itself with esbuild's Go API; nothing built is committed.)
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { execFileSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

const web = fileURLToPath(new URL('..', import.meta.url))
const npm = (args, cwd) => execFileSync('npm', args, { cwd, encoding: 'utf8', env: { ...process.env, npm_config_audit: 'false', npm_config_fund: 'false', npm_config_update_notifier: 'false' } })

test('npm pack → install the tarball offline into a scratch project → import and type-check', t => {
  const tmp = mkdtempSync(join(tmpdir(), 'autoglm-pack-'))
  t.after(() => rmSync(tmp, { recursive: true, force: true }))
  const [packed] = JSON.parse(npm(['pack', '--json', '--pack-destination', tmp], web))
  assert.equal(packed.name, '@open-autoglm/client')
  assert.deepEqual(packed.files.map(f => f.path).sort(), ['client.d.ts', 'dist/client.js', 'dist/client.min.js', 'dist/client.min.js.map', 'package.json'])

  const app = join(tmp, 'app')
  execFileSync('mkdir', ['-p', app])
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'scratch', private: true, type: 'module' }))
  npm(['install', '--offline', '--no-package-lock', join(tmp, packed.filename)], app)
  writeFileSync(join(app, 'use.mjs'), `
    import { connect, applyOps, checkName } from '@open-autoglm/client'
    import * as min from '@open-autoglm/client/min'
    import pkg from '@open-autoglm/client/package.json' with { type: 'json' }
    const a = applyOps({}, [{ op: 'inc', path: 'n', value: 2 }])
    const b = min.applyOps({}, [{ op: 'inc', path: 'n', value: 2 }])
    console.log(JSON.stringify({ version: pkg.version, a, b, connect: typeof connect, minConnect: typeof min.connect, name: checkName('forms/x') }))
  `)
  const got = JSON.parse(execFileSync(process.execPath, ['use.mjs'], { cwd: app, encoding: 'utf8' }))
  assert.deepEqual(got, { version: '0.1.0', a: { n: 2 }, b: { n: 2 }, connect: 'function', minConnect: 'function', name: 'forms/x' })

  writeFileSync(join(app, 'use.ts'), `
    import { connect, type Doc } from '@open-autoglm/client'
    interface Profile { name: string }
    const d: Doc<Profile> = connect('https://sync.example.com').doc<Profile>('profiles/u1')
    const p: Profile = d.state
    // @ts-expect-error the package's types are in force
    const n: number = d.state.name
    void [p, n]
  `)
  writeFileSync(join(app, 'tsconfig.json'), JSON.stringify({ compilerOptions: { strict: true, noEmit: true, module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', lib: ['es2022', 'dom'], types: [] }, files: ['use.ts'] }))
  try {
    execFileSync(process.execPath, [join(web, 'node_modules/typescript/bin/tsc'), '-p', app], { encoding: 'utf8' })
  } catch (e) {
    assert.fail(`tsc against the installed package:\n${e.stdout}${e.stderr}`)
  }
})
