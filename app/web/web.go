// Package web holds the browser side of the service, embedded in the
// binary: the JavaScript client (client.js with its TypeScript declarations,
// served at /v1/client.js) and the demo page (static/, served at /). The
// package is also an npm package (package.json) so applications can import
// the client from the repository.
package web

import (
	"embed"
	"io/fs"
)

//go:embed client.js client.d.ts static
var files embed.FS

// Files returns the embedded assets: client.js, client.d.ts and static/.
func Files() fs.FS { return files }
