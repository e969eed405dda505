// Package errcode lets the pure packages (clock, merge, collections) give
// their errors a wire code and structured details without importing core:
// core.CodeOf and core.DetailsOf read them through the Coded and Detailed
// interfaces, so core depends on no schema loader or adapter to classify an
// error. The codes are the strings of core.Code (docs/protocol.md).
package errcode

// Coded is an error that names its own wire code.
type Coded interface {
	error
	Code() string
}

// Detailed is an error that carries structured details for the client
// (for example the field a rule refused).
type Detailed interface {
	error
	Details() any
}

type sentinel struct{ code, msg string }

func (e *sentinel) Error() string { return e.msg }
func (e *sentinel) Code() string  { return e.code }

// New returns a sentinel error with message msg and wire code code. Wrap it
// with %w (or return it from Unwrap) and the code travels with the wrapper.
func New(code, msg string) error { return &sentinel{code: code, msg: msg} }
