package httpapi

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"sync"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/web"
)

// asset is one embedded file, ready to serve: content type, ETag and a
// gzip copy.
type asset struct {
	body, gz []byte
	ctype    string
	etag     string
}

// webAssets loads the embedded demo page and declarations, and the
// client's minified build (made once from the embedded source), once per
// handler.
func webAssets() map[string]*asset {
	out := map[string]*asset{}
	_ = fs.WalkDir(web.Files(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(web.Files(), p)
		if err != nil {
			return err
		}
		out[p] = newAsset(p, body)
		return nil
	})
	if js, srcMap, err := web.Client(); err == nil {
		out["client.min.js"] = newAsset("client.min.js", js)
		out["client.min.js.map"] = newAsset("client.min.js.map", srcMap)
	}
	return out
}

// newAsset prepares body, found at p, for serving.
func newAsset(p string, body []byte) *asset {
	sum := sha256.Sum256(body)
	a := &asset{body: body, etag: `"` + hex.EncodeToString(sum[:8]) + `"`, ctype: mime.TypeByExtension(path.Ext(p))}
	switch path.Ext(p) {
	case ".js", ".mjs":
		a.ctype = "text/javascript; charset=utf-8"
	case ".map":
		a.ctype = "application/json; charset=utf-8"
	case ".ts":
		a.ctype = "text/plain; charset=utf-8" // TypeScript declarations, read by tools
	}
	if a.ctype == "" {
		a.ctype = "application/octet-stream"
	}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	_, _ = zw.Write(body)
	_ = zw.Close()
	if buf.Len() < len(body) {
		a.gz = buf.Bytes()
	}
	return a
}

// registerWeb serves the JavaScript client's minified build at
// /v1/client.js (its source map at /v1/client.min.js.map, declarations at
// /v1/client.d.ts) and the demo page at / with its files
// under /demo/. The assets are prepared on the first request for one of
// them, so a replica starts without minifying and compressing.
func (s *Server) registerWeb(mux router) {
	assets := sync.OnceValue(webAssets)
	serve := func(name string, cors bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			a := assets()[name]
			if a == nil {
				s.fail(w, r, core.Errorf(core.CodeNotFound, "no route %s", r.URL.Path))
				return
			}
			h := w.Header()
			// The client is imported cross-origin by pages the origin
			// policy allows (a module script is a CORS request).
			if cors && r.Header.Get("Origin") != "" {
				if s.refuseOrigin(w, r) {
					return
				}
				h.Set("Access-Control-Allow-Origin", r.Header.Get("Origin"))
				h.Add("Vary", "Origin")
			}
			h.Set("Content-Type", a.ctype)
			h.Set("ETag", a.etag)
			h.Set("Cache-Control", "no-cache") // revalidate: the ETag changes with every build
			h.Set("X-Content-Type-Options", "nosniff")
			h.Add("Vary", "Accept-Encoding")
			if strings.HasSuffix(name, ".html") {
				h.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'")
			}
			if r.Header.Get("If-None-Match") == a.etag {
				w.WriteHeader(http.StatusNotModified)
				return
			}
			body := a.body
			if a.gz != nil && acceptsGzip(r) {
				h.Set("Content-Encoding", "gzip")
				body = a.gz
			}
			w.WriteHeader(http.StatusOK)
			if r.Method != http.MethodHead {
				_, _ = w.Write(body)
			}
		}
	}
	mux.HandleFunc("GET /v1/client.js", serve("client.min.js", true))
	mux.HandleFunc("GET /v1/client.min.js.map", serve("client.min.js.map", true))
	mux.HandleFunc("GET /v1/client.d.ts", serve("client.d.ts", true))
	mux.HandleFunc("GET /{$}", serve("static/index.html", false))
	mux.HandleFunc("GET /demo/{file}", func(w http.ResponseWriter, r *http.Request) {
		serve("static/"+r.PathValue("file"), false)(w, r)
	})
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		enc, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(enc), "gzip") && strings.ReplaceAll(q, " ", "") != "q=0" {
			return true
		}
	}
	return false
}
