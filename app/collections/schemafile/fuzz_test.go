package schemafile_test

import (
	"errors"
	"testing"

	"github.com/open-autoglm/autoglm/app/collections"
	"github.com/open-autoglm/autoglm/app/collections/schemafile"
)

// FuzzParse: any file either loads or fails with a positioned config error;
// it never panics, and a loaded config answers lookups.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"collections:\n  forms:\n    policy: crdt\n",
		"allow_unknown: false\ncollections:\n  a:\n    fields:\n      x: {type: string, max_length: 3}\n",
		"collections:\n  a:\n    state_machines:\n      s:\n        states: [x, y]\n        initial: x\n        transitions:\n          - {from: x, to: y, roles: [r]}\n",
		"collections: [", "", "defaults:\n  limits:\n    max_ops: 1\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := schemafile.Parse("fuzz.yaml", b)
		if err != nil {
			if !errors.Is(err, collections.ErrInvalidConfig) {
				t.Fatalf("error is not a config error: %v", err)
			}
			return
		}
		for _, name := range append(cfg.Names(), "unlisted") {
			col, _ := cfg.Collection(name)
			_ = col.Check(nil, map[string]any{"x": "y"}, nil)
		}
	})
}
