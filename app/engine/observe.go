package engine

import (
	"context"

	"github.com/open-autoglm/autoglm/app/core"
)

// Observer is a named consumer of the commits this engine makes (see the
// package comment for what it is guaranteed to see). Changes must not
// block: it runs on the document's writer.
type Observer struct {
	Name    string
	Changes func(ctx context.Context, changes []core.Change)
}

// observe hands one commit's changes to the local fast path and then to
// the observers, in the order given; ctx carries the commit's span.
func (e *Engine) observe(ctx context.Context, changes []core.Change) {
	switch {
	case e.opt.LocalContext != nil:
		e.opt.LocalContext(ctx, changes)
	case e.opt.Local != nil:
		e.opt.Local(changes)
	}
	for _, o := range e.opt.Observers {
		o.Changes(ctx, changes)
	}
}
