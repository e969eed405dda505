package daprstore_test

import (
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/daprstore"
)

// Errors as daprd words them: a lost race is a version conflict, anything
// that says the store or the sidecar cannot answer now is unavailable (the
// writer retries with the same op id), and the rest stays an error of its
// own.
func TestClassify(t *testing.T) {
	internal := func(msg string) error { return status.Error(codes.Internal, msg) }
	for _, c := range []struct {
		err  error
		want error
	}{
		{internal("error while executing state transaction: possible etag mismatch. error from state store"), core.ErrVersionConflict},
		{internal("failed to set key k: already exists"), core.ErrVersionConflict},
		{status.Error(codes.Unavailable, "connection error"), core.ErrUnavailable},
		{internal("fail to get k from state store statestore: FATAL: terminating connection due to administrator command (SQLSTATE 57P01)"), core.ErrUnavailable},
		{internal("fail to get k from state store statestore: circuit breaker is open"), core.ErrUnavailable},
		{internal("fail to get k from state store statestore: too many requests"), core.ErrUnavailable},
		{internal("fail to get k from state store statestore: dial tcp 127.0.0.1:5432: connect: connection refused"), core.ErrUnavailable},
		{internal("value is not valid JSON"), nil},
	} {
		got := daprstore.Classify("op", c.err)
		if c.want == nil {
			if errors.Is(got, core.ErrVersionConflict) || errors.Is(got, core.ErrUnavailable) {
				t.Errorf("%v: classified as %v, want neither a conflict nor unavailable", c.err, got)
			}
			continue
		}
		if !errors.Is(got, c.want) {
			t.Errorf("%v: classified as %v, want %v", c.err, got, c.want)
		}
	}
}
