// Package rest is the small HTTP client the integration tests, the cluster
// tests and the saga tests use to talk to the REST API: JSON bodies, header
// pairs, and the error code of an error answer.
package rest

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Response is an answer with its body decoded (when it is a JSON object).
type Response struct {
	Status int
	Header http.Header
	Body   map[string]any
	Raw    string
}

// Code is the error code of an error answer ("" otherwise).
func (r Response) Code() string {
	if e, ok := r.Body["error"].(map[string]any); ok {
		s, _ := e["code"].(string)
		return s
	}
	return ""
}

var client = &http.Client{Timeout: 30 * time.Second}

// Must is Do in a test: an error sending the request or reading the
// answer fails the test.
func Must(t testing.TB, method, url, body string, hdr ...string) Response {
	t.Helper()
	r, err := Do(method, url, body, hdr...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return r
}

// Do sends a request; a non-empty body is sent as application/json, and
// hdr holds header name/value pairs (they may override the content type).
func Do(method, url, body string, hdr ...string) (Response, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return Response{}, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := client.Do(req)
	if err != nil {
		return Response{}, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return Response{}, err
	}
	r := Response{Status: res.StatusCode, Header: res.Header, Raw: string(raw)}
	_ = json.Unmarshal(raw, &r.Body)
	return r, nil
}
