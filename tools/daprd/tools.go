//go:build tools

// Package tools records the daprd main package as a dependency so that
// `go mod tidy` keeps everything needed to build it.
package tools

import _ "github.com/dapr/dapr/cmd/daprd"
