// Package web holds the browser side of the service, embedded in the
// binary: the JavaScript client (client.js, minified when the service
// first serves it and served at /v1/client.js with its source map and
// TypeScript declarations) and the demo page (static/, served at /). The
// directory is also the npm package @open-autoglm/client (package.json),
// whose build (scripts/build.mjs) uses the same minifier, esbuild.
package web

import (
	"embed"
	"fmt"
	"io/fs"
	"sync"

	"github.com/evanw/esbuild/pkg/api"
)

//go:embed client.js client.d.ts static
var files embed.FS

// Files returns the embedded assets: client.js, client.d.ts and static/.
func Files() fs.FS { return files }

var minified struct {
	once       sync.Once
	js, srcMap []byte
	err        error
}

// Client returns the minified client and its source map, made once from
// the embedded client.js. Minifying at start rather than committing the
// output keeps build outputs out of the repository and a Go build free of
// Node.
func Client() (js, sourceMap []byte, err error) {
	m := &minified
	m.once.Do(func() {
		src, err := fs.ReadFile(files, "client.js")
		if err != nil {
			m.err = err
			return
		}
		r := api.Transform(string(src), api.TransformOptions{
			Loader: api.LoaderJS, Format: api.FormatESModule, Target: api.ES2022,
			MinifyWhitespace: true, MinifyIdentifiers: true, MinifySyntax: true,
			LegalComments: api.LegalCommentsNone, Sourcefile: "../client.js",
			Sourcemap: api.SourceMapExternal, SourcesContent: api.SourcesContentInclude,
		})
		if len(r.Errors) > 0 {
			m.err = fmt.Errorf("minify client.js: %s", r.Errors[0].Text)
			return
		}
		m.js = append(r.Code, "//# sourceMappingURL=client.min.js.map\n"...)
		m.srcMap = r.Map
	})
	return m.js, m.srcMap, m.err
}
