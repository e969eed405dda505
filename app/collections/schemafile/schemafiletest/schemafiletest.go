// Package schemafiletest loads collections files for tests: a file or text
// that does not load fails the test at once.
package schemafiletest

import (
	"testing"

	"github.com/open-autoglm/autoglm/app/collections"
	"github.com/open-autoglm/autoglm/app/collections/schemafile"
)

// MustLoad loads a config file or fails the test.
func MustLoad(tb testing.TB, path string) *collections.Config {
	tb.Helper()
	c, err := schemafile.Load(path)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// MustParse parses config text or fails the test.
func MustParse(tb testing.TB, text string) *collections.Config {
	tb.Helper()
	c, err := schemafile.Parse("test.yaml", []byte(text))
	if err != nil {
		tb.Fatal(err)
	}
	return c
}
