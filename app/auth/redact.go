package auth

import (
	"errors"

	"github.com/open-autoglm/autoglm/app/collections"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/merge"
)

// hiddenMessages replace, for a caller who may not read the document, the
// messages of refusals whose text can quote the document: stored values,
// their types, a state, the document's size.
var hiddenMessages = map[core.Code]string{
	core.CodeInvalidOp:         "a field op does not apply to the document",
	core.CodeFieldRule:         "the result breaks a field rule of the collection",
	core.CodeInvalidTransition: "the collection's state machine does not allow this change",
	core.CodeForbidden:         "the caller's roles may not make this change",
	core.CodeTooLarge:          "the document would exceed its size limit",
}

// Redact returns the refusal of a write as identity id may see it. A caller
// who may read collection coll gets err unchanged. Anyone else gets the
// same code with nothing read from the document: a conflict keeps only its
// versions (base, current) — not theirs, yours (a replacing write lists the
// stored fields it removes) or the open conflicts; a rule's refusal keeps
// only the field's path; a message that could quote stored content is
// replaced by a fixed one.
func (p Policy) Redact(id Identity, coll string, err error) error {
	if err == nil || p.CanRead(id, coll) == nil {
		return err
	}
	return hide(err)
}

// RedactIn returns the refusal of a write as identity id may see it when
// its view of the document is v (Policy.View of the stored document). A
// caller who may not read the document at all gets what Redact gives a
// caller without read access. A caller with a partial view gets the
// refusal without what it may not read: a conflict's theirs, yours and
// open conflicts lose the hidden fields, a rule's refusal on a hidden
// field keeps only the field's path, and a size refusal gets the fixed
// message (the document's size counts the fields it may not read).
func (p Policy) RedactIn(id Identity, coll string, v collections.View, err error) error {
	if err == nil {
		return nil
	}
	if p.CanRead(id, coll) != nil || v.Denied {
		return hide(err)
	}
	if v.All() {
		return err
	}
	var (
		ce *merge.ConflictError
		ke *collections.CheckError
	)
	switch {
	case errors.As(err, &ce):
		out := *ce
		out.Theirs, out.Yours = v.Values(ce.Theirs), v.Ops(ce.Yours)
		if ce.Conflicts != nil {
			out.Conflicts = map[string][]merge.Candidate{}
			for path, cands := range ce.Conflicts {
				if !v.Hides(path) {
					out.Conflicts[path] = cands
				}
			}
		}
		return &out
	case errors.As(err, &ke) && v.Hides(ke.Field):
		code := core.CodeOf(err)
		return &core.Error{Code: code, Message: ke.Field + ": " + hiddenMessages[code], Details: map[string]any{"field": ke.Field}}
	case core.CodeOf(err) == core.CodeTooLarge:
		return hide(err)
	}
	return err
}

// hide strips a refusal of everything read from the document.
func hide(err error) error {
	code := core.CodeOf(err)
	var (
		ce *merge.ConflictError
		ke *collections.CheckError
		e  *core.Error
	)
	switch {
	case errors.As(err, &ce):
		return &core.Error{Code: code, Message: ce.Error(), Details: map[string]any{"base": ce.Base, "current": ce.Current}}
	case errors.As(err, &ke):
		return &core.Error{Code: code, Message: ke.Field + ": " + hiddenMessages[code], Details: map[string]any{"field": ke.Field}}
	case errors.As(err, &e) && code != core.CodeTooLarge:
		return err // the service's own refusals quote versions at most
	case hiddenMessages[code] != "":
		return &core.Error{Code: code, Message: hiddenMessages[code]}
	}
	return err
}
