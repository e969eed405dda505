package httpapi

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/open-autoglm/autoglm/app/web"
)

func TestWebAssets(t *testing.T) {
	t.Parallel()
	h := (&Server{Log: logrus.New(), Version: "test"}).Handler()
	get := func(path string, hdr ...string) *http.Response {
		req := httptest.NewRequest("GET", path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w.Result()
	}
	src, _, err := web.Client()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct{ path, ctype, contains string }{
		{"/v1/client.js", "text/javascript; charset=utf-8", "//# sourceMappingURL=client.min.js.map"},
		{"/v1/client.min.js.map", "application/json; charset=utf-8", `"sources": ["../client.js"]`},
		{"/v1/client.d.ts", "text/plain; charset=utf-8", "export declare function connect"},
		{"/", "text/html; charset=utf-8", `src="/demo/demo.js"`},
		{"/demo/demo.js", "text/javascript; charset=utf-8", "from '/v1/client.js'"},
		{"/demo/demo.css", "text/css; charset=utf-8", ":root"},
	}
	for _, c := range cases {
		res := get(c.path)
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 || res.Header.Get("Content-Type") != c.ctype || !bytes.Contains(body, []byte(c.contains)) {
			t.Fatalf("%s: %d %q %.80q", c.path, res.StatusCode, res.Header.Get("Content-Type"), body)
		}
	}
	t.Run("Gzip", func(t *testing.T) {
		res := get("/v1/client.js", "Accept-Encoding", "br, gzip")
		if res.Header.Get("Content-Encoding") != "gzip" {
			t.Fatalf("encoding %q", res.Header.Get("Content-Encoding"))
		}
		zr, err := gzip.NewReader(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		plain, _ := io.ReadAll(zr)
		if !bytes.Equal(plain, src) {
			t.Fatal("gzip body differs from the minified build")
		}
		if res := get("/v1/client.js", "Accept-Encoding", "gzip;q=0"); res.Header.Get("Content-Encoding") != "" {
			t.Fatal("gzip refused with q=0")
		}
	})
	t.Run("ETag", func(t *testing.T) {
		etag := get("/v1/client.js").Header.Get("ETag")
		if res := get("/v1/client.js", "If-None-Match", etag); etag == "" || res.StatusCode != http.StatusNotModified {
			t.Fatalf("etag %q: %d", etag, res.StatusCode)
		}
	})
	t.Run("DemoPageCSP", func(t *testing.T) {
		if csp := get("/").Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
			t.Fatalf("CSP %q", csp)
		}
	})
	t.Run("NotFound", func(t *testing.T) {
		for _, p := range []string{"/demo/nope.js", "/index.html", "/v2/client.js"} {
			res := get(p)
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != 404 || !bytes.Contains(body, []byte(`"not_found"`)) {
				t.Fatalf("%s: %d %s", p, res.StatusCode, body)
			}
		}
	})
}
