package collections_test

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/open-autoglm/autoglm/app/collections"
	"github.com/open-autoglm/autoglm/app/merge"
)

func ptr(x float64) *float64 { return &x }

// Field.Validate names the rule at fault (and the enum value) so a loader
// can point at it.
func TestFieldValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		f     collections.Field
		key   string
		index int
		msg   string
	}{
		{"Fine", collections.Field{Type: collections.TypeString, MaxLength: 3, Enum: []any{"a"}}, "", 0, ""},
		{"AnyTypeTakesAnyEnum", collections.Field{MaxLength: -1, Enum: []any{"a", 1.0, nil}}, "", 0, ""},
		{"MaxLengthOnNumber", collections.Field{Type: collections.TypeNumber, MaxLength: 0}, "max_length", -1, "max_length needs type string, text, array or set"},
		{"TextEnum", collections.Field{Type: collections.TypeText, MaxLength: -1, Enum: []any{"a"}}, "enum", -1, "a text field takes no enum (use type string)"},
		{"MinOnString", collections.Field{Type: collections.TypeString, MaxLength: -1, Min: ptr(1)}, "min", -1, "min needs type number or integer"},
		{"MaxOnAny", collections.Field{MaxLength: -1, Max: ptr(1)}, "max", -1, "max needs type number or integer"},
		{"MinAboveMax", collections.Field{Type: collections.TypeInteger, MaxLength: -1, Min: ptr(5), Max: ptr(1)}, "max", -1, "max 1 is below min 5"},
		{"EnumWrongType", collections.Field{Type: collections.TypeNumber, MaxLength: -1, Enum: []any{1.0, "two"}}, "enum", 1, `enum value "two" is not of type number`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.f.Path = "x"
			err := tc.f.Validate()
			if tc.key == "" {
				if err != nil {
					t.Fatalf("Validate = %v", err)
				}
				return
			}
			var se *collections.SchemaError
			if !errors.As(err, &se) || !errors.Is(err, collections.ErrInvalidConfig) {
				t.Fatalf("Validate = %T %v, want a *SchemaError", err, err)
			}
			if se.Path != "x" || se.Key != tc.key || se.Index != tc.index || se.Msg != tc.msg {
				t.Fatalf("Validate = %+v, want key %q index %d msg %q", se, tc.key, tc.index, tc.msg)
			}
		})
	}
}

func TestTypeValid(t *testing.T) {
	for _, ty := range []collections.Type{collections.TypeAny, collections.TypeString, collections.TypeText, collections.TypeNumber,
		collections.TypeInteger, collections.TypeBool, collections.TypeObject, collections.TypeArray, collections.TypeSet} {
		if !ty.Valid() {
			t.Errorf("%q is not valid", ty)
		}
	}
	if collections.Type("txt").Valid() {
		t.Error(`"txt" is valid`)
	}
}

// A collection built in code is validated and indexed as a loaded one: the
// read rules' fields are known to Touches and RulePaths.
func TestNewConfig(t *testing.T) {
	col := &collections.Collection{
		Name: "projects", Policy: merge.LWW, OwnerField: "lead",
		Rows:   &collections.ReadRules{Claims: map[string]string{"team": "team"}},
		Fields: map[string]*collections.Field{"budget": {Path: "budget", MaxLength: -1, ReadableBy: []string{"owner"}}},
	}
	cfg, err := collections.NewConfig("code", false, collections.Default().Defaults, []*collections.Collection{col}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := cfg.Collection("projects")
	if !ok || !got.Declared || cfg.File != "code" || cfg.AllowUnknown {
		t.Fatalf("config %+v, collection %+v", cfg, got)
	}
	if diff := cmp.Diff([]string{"lead", "team"}, got.RulePaths()); diff != "" {
		t.Fatalf("RulePaths (-want +got):\n%s", diff)
	}
	if v := got.ViewOf(collections.Reader{Subject: "ann"}, map[string]any{"lead": "bob", "team": "red"}); !v.Denied {
		t.Fatalf("view %+v: want denied by the read rules", v)
	}

	for _, tc := range []struct {
		name string
		cols []*collections.Collection
		want string
	}{
		{"BadName", []*collections.Collection{{Name: "Orders"}}, `collection name "Orders": want [a-z][a-z0-9_-]{0,63}`},
		{"Twice", []*collections.Collection{{Name: "a"}, {Name: "a"}}, "collection a: declared twice"},
		{"BadField", []*collections.Collection{{Name: "a", Fields: map[string]*collections.Field{"n": {Path: "n", Type: collections.TypeBool, MaxLength: 2}}}},
			"collection a: field n: max_length needs type string, text, array or set"},
		{"OwnerWithoutOwnerField", []*collections.Collection{{Name: "a", Rows: &collections.ReadRules{Owner: true}}},
			"collection a: read rules name the owner, but the collection has no owner_field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := collections.NewConfig("", true, collections.Collection{}, tc.cols, nil)
			var se *collections.SchemaError
			if !errors.As(err, &se) || err.Error() != tc.want {
				t.Fatalf("NewConfig = %v, want %q", err, tc.want)
			}
		})
	}
}
