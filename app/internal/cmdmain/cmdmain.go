// Package cmdmain is the shared main of the repository's commands: a
// context that ends on Ctrl-C or SIGTERM, the error printed after the
// command's name, and the exit code; and which flags a user gave.
package cmdmain

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// Run calls run with a context that ends on Ctrl-C or SIGTERM and the
// command line's arguments. When run fails, it prints the error after name
// on stderr and exits with 1, or with the code WithCode gave the error.
func Run(name string, run func(ctx context.Context, args []string) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(exitCode(err))
	}
}

// WithCode makes the command exit with code when it fails with err.
func WithCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &codedError{code: code, err: err}
}

type codedError struct {
	code int
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

func exitCode(err error) int {
	var c *codedError
	if errors.As(err, &c) {
		return c.code
	}
	return 1
}

// Explicit reports which flags of fs were given on the command line (after
// fs.Parse), by name: a default that is in the way may be replaced, a value
// the user asked for may not.
func Explicit(fs *flag.FlagSet) map[string]bool {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	return given
}
