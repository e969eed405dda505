package core

import (
	"context"
	"errors"
	"fmt"

	"github.com/open-autoglm/autoglm/app/internal/errcode"
)

// Code is a stable, documented error code sent to clients (docs/protocol.md).
// Clients branch on codes, never on messages.
type Code string

// Error codes. Keep docs/protocol.md in step.
const (
	CodeBadRequest         Code = "bad_request"         // malformed JSON or message
	CodeInvalidName        Code = "invalid_name"        // collection or id syntax
	CodeInvalidOp          Code = "invalid_op"          // a field operation that does not apply
	CodeTooLarge           Code = "too_large"           // body, message or document over its limit
	CodeNotFound           Code = "not_found"           // no such document (or deleted)
	CodeConflict           Code = "conflict"            // base version is not current (strict)
	CodeFieldRule          Code = "field_rule"          // a field rule of the collection refused the result
	CodeInvalidTransition  Code = "invalid_transition"  // a workflow state change the state machine does not allow
	CodePreconditionFailed Code = "precondition_failed" // If-Match / If-None-Match did not hold
	CodeClockSkew          Code = "clock_skew"          // op stamped too far in the future
	CodeOpIDReused         Code = "op_id_reused"        // the op id was already used for an op with other content
	CodeOpExpired          Code = "op_expired"          // the op id is older than the idempotency window remembers
	CodeUnsupportedMedia   Code = "unsupported_media"   // body is not application/json
	CodeMethodNotAllowed   Code = "method_not_allowed"  // HTTP method not served on the route
	CodeUnauthorized       Code = "unauthorized"        // missing or invalid credentials
	CodeForbidden          Code = "forbidden"           // authenticated but not allowed
	CodeAccessRevoked      Code = "access_revoked"      // a refreshed token no longer allows reading a watched document
	CodeNotReadable        Code = "not_readable"        // a watched document is (now) hidden from the caller by a row rule; a snapshot follows when it is readable again
	CodeRateLimited        Code = "rate_limited"        // slow down and retry
	CodeRequestTimeout     Code = "request_timeout"     // the request body did not arrive in time
	CodeUnavailable        Code = "unavailable"         // sidecar or store unreachable; retry
	CodeShuttingDown       Code = "shutting_down"       // replica is draining; reconnect elsewhere
	CodeStorageFormat      Code = "storage_format"      // the stored document is in a newer format than this replica reads; retry elsewhere
	CodeInternal           Code = "internal"            // a bug or an unexpected store failure
)

// Codes lists every code, for metrics that show each from the start.
var Codes = []Code{CodeBadRequest, CodeInvalidName, CodeInvalidOp, CodeTooLarge, CodeNotFound, CodeConflict,
	CodeFieldRule, CodeInvalidTransition, CodePreconditionFailed, CodeClockSkew, CodeUnsupportedMedia,
	CodeMethodNotAllowed, CodeUnauthorized, CodeForbidden, CodeRateLimited, CodeUnavailable, CodeShuttingDown,
	CodeStorageFormat, CodeInternal}

// Retryable reports whether a client may retry the same request unchanged.
func (c Code) Retryable() bool {
	switch c {
	case CodeRateLimited, CodeUnavailable, CodeShuttingDown, CodeStorageFormat, CodeInternal:
		return true
	}
	return false
}

// Sentinel errors adapters wrap with %w.
var (
	// ErrVersionConflict: the store's ETag no longer matches (another writer
	// won). The writer reloads and re-applies; clients only see it when
	// retries are exhausted.
	ErrVersionConflict = errors.New("version conflict")
	// ErrUnavailable: the sidecar or the store cannot be reached.
	ErrUnavailable = errors.New("store unavailable")
	// ErrShuttingDown: the replica no longer accepts work.
	ErrShuttingDown = errors.New("shutting down")
)

// Error is an error with a wire code and a message safe to show clients.
// Details, when set, is sent along (e.g. the data a strict conflict carries).
type Error struct {
	Code    Code
	Message string
	Details any
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Errorf builds an *Error.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// CodeOf maps any error to its wire code. This is the one place that decides
// what clients are told; the message of an internal error is never sent.
// Errors of the pure packages (clock, merge, collections) name their own
// code through errcode.Coded; a core *Error in the chain takes precedence.
func CodeOf(err error) Code {
	var (
		e *Error
		c errcode.Coded
	)
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		return e.Code
	case errors.As(err, &c):
		return Code(c.Code())
	case errors.Is(err, ErrVersionConflict):
		return CodeConflict
	case errors.Is(err, ErrShuttingDown):
		return CodeShuttingDown
	case errors.Is(err, ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return CodeUnavailable
	}
	return CodeInternal
}

// PublicMessage is the message to send a client for err: the error's own
// text for client mistakes, a fixed phrase for internal failures.
func PublicMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	switch c := CodeOf(err); c {
	case CodeInternal:
		return "internal error"
	case CodeUnavailable:
		return "store unavailable, retry later"
	case CodeShuttingDown:
		return "replica is shutting down, reconnect"
	case CodeStorageFormat:
		return "the document is stored in a newer format than this replica reads, retry later"
	default:
		return err.Error()
	}
}

// DetailsOf returns the structured details attached to err, if any: those
// of a core *Error, else those the error names itself (errcode.Detailed,
// e.g. a merge conflict or a refused field rule).
func DetailsOf(err error) any {
	var (
		e *Error
		d errcode.Detailed
	)
	switch {
	case errors.As(err, &e):
		return e.Details
	case errors.As(err, &d):
		return d.Details()
	}
	return nil
}
