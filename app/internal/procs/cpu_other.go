//go:build !unix

package procs

import "time"

// processCPU is not known here: Supported is false.
func processCPU() time.Duration { return 0 }
