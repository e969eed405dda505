package core_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/open-autoglm/autoglm/app/clock"
	"github.com/open-autoglm/autoglm/app/collections"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/merge"
)

// The pure packages name their own codes; CodeOf must give each the code
// docs/protocol.md documents, wrapped or not, and a core *Error wins.
func TestCodeOfLeafErrors(t *testing.T) {
	cases := []struct {
		err  error
		want core.Code
	}{
		{merge.ErrConflict, core.CodeConflict},
		{&merge.ConflictError{Base: 1, Current: 2}, core.CodeConflict},
		{merge.ErrInvalidOp, core.CodeInvalidOp},
		{collections.ErrForbidden, core.CodeForbidden},
		{collections.ErrForbiddenTransition, core.CodeForbidden},
		{collections.ErrForbiddenField, core.CodeForbidden},
		{collections.ErrInvalidTransition, core.CodeInvalidTransition},
		{&collections.CheckError{Field: "n", Err: collections.ErrFieldRule}, core.CodeFieldRule},
		{collections.ErrInvalidConfig, core.CodeInternal},
		{clock.ErrSkew, core.CodeClockSkew},
		{clock.ErrFormat, core.CodeBadRequest},
		{core.ErrVersionConflict, core.CodeConflict},
		{fmt.Errorf("op 3: %w", clock.ErrSkew), core.CodeClockSkew},
		{fmt.Errorf("%w: %w", core.Errorf(core.CodeTooLarge, "big"), merge.ErrInvalidOp), core.CodeTooLarge},
	}
	for _, c := range cases {
		if got := core.CodeOf(c.err); got != c.want {
			t.Errorf("CodeOf(%v) = %s, want %s", c.err, got, c.want)
		}
		if !slices.Contains(core.Codes, c.want) {
			t.Errorf("%s is not a documented code", c.want)
		}
	}
}

func TestDetailsOfLeafErrors(t *testing.T) {
	cases := []struct {
		err  error
		want string
	}{
		{fmt.Errorf("doc: %w", &collections.CheckError{Field: "status", From: "a", To: "b", Err: collections.ErrInvalidTransition}), `{"field":"status","from":"a","to":"b"}`},
		{&collections.CheckError{Field: "n", Err: collections.ErrFieldRule}, `{"field":"n"}`},
		{&merge.ConflictError{Base: 1, Current: 2}, `{"base":1,"current":2,"theirs":null,"yours":null}`},
		{merge.ErrInvalidOp, `null`},
	}
	for _, c := range cases {
		if d, _ := json.Marshal(core.DetailsOf(c.err)); string(d) != c.want {
			t.Errorf("DetailsOf(%v) = %s, want %s", c.err, d, c.want)
		}
	}
}
