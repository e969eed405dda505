// Package web holds the browser side of the service, embedded in the
// binary: the JavaScript client's minified build (dist/client.min.js, built
// from client.js by scripts/build.mjs and committed so a Go build needs no
// Node; served at /v1/client.js with its source map and TypeScript
// declarations) and the demo page (static/, served at /). The directory is
// also the npm package @open-autoglm/client (package.json).
package web

import (
	"embed"
	"io/fs"
)

//go:embed dist/client.min.js dist/client.min.js.map client.d.ts static
var files embed.FS

// Files returns the embedded assets: dist/client.min.js (+ .map),
// client.d.ts and static/.
func Files() fs.FS { return files }
