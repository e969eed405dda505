package protocol

import "github.com/open-autoglm/autoglm/app/core"

// MaxDepth is the deepest JSON nesting a message or request body may have.
// Field paths are at most 16 deep; values get some room beyond that.
const MaxDepth = 32

// CheckDepth refuses JSON nested deeper than max before it is decoded, so a
// hostile "[[[[…" costs a linear scan and no recursion.
func CheckDepth(b []byte, max int) error {
	depth := 0
	inString, escaped := false, false
	for _, c := range b {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			if depth++; depth > max {
				return core.Errorf(core.CodeBadRequest, "JSON nested deeper than %d levels", max)
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return nil
}
