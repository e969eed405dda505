package client

import "github.com/open-autoglm/autoglm/app/merge"

// Text fields (docs/conflicts.md, "Text fields"): edits by position on the
// copy the client holds, sent by id so they merge with concurrent typing.
// Positions count Unicode code points.

// TextInsert returns the ins op that inserts s at pos of the text at path,
// as the client sees it in d. An edit not yet applied to d is not seen:
// send one at a time (Do), or build the next on the result of ApplyPlain.
func (c *Client) TextInsert(d *Doc, path string, pos int, s string) (FieldOp, error) {
	return merge.InsertOp(d.Data(), path, c.ID(), pos, s)
}

// TextDelete returns the del op that deletes count characters from pos of
// the text at path as the client sees it in d; ok is false when there is
// nothing to delete.
func TextDelete(d *Doc, path string, pos, count int) (op FieldOp, ok bool, err error) {
	return merge.DeleteOp(d.Data(), path, pos, count)
}

// Text returns the text at path in d (its string is Text.String()).
func Text(d *Doc, path string) (*merge.Text, error) { return merge.TextOf(d.Data(), path) }
