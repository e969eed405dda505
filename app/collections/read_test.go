package collections_test

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/open-autoglm/autoglm/app/collections"
	"github.com/open-autoglm/autoglm/app/collections/schemafile/schemafiletest"
	"github.com/open-autoglm/autoglm/app/merge"
)

const readRules = `
collections:
  profiles:
    owner_field: user_id
    read_rules: {owner: true, roles: [admin]}
    fields:
      email: {readable_by: [owner, admin]}
  projects:
    owner_field: lead
    read_rules: {claims: {team: team}, roles: [admin]}
    fields:
      budget: {readable_by: [admin, owner]}
      notes: {readable_by: [auditor]}
  open:
    fields:
      salary: {readable_by: [hr]}
`

func TestViewOf(t *testing.T) {
	cfg := schemafiletest.MustParse(t, readRules)
	ann := collections.Reader{Subject: "ann", Roles: []string{"user"}, Claims: map[string]string{"team": "red"}}
	bob := collections.Reader{Subject: "bob", Roles: []string{"user"}, Claims: map[string]string{"team": "blue"}}
	admin := collections.Reader{Subject: "root", Roles: []string{"admin"}}
	anon := collections.Reader{}
	annProfile := map[string]any{"user_id": "ann", "email": "a@x"}
	redProject := map[string]any{"team": "red", "lead": "bob", "budget": 5.0}
	for _, tc := range []struct {
		name, coll string
		r          collections.Reader
		data       map[string]any
		denied     bool
		hidden     []string
	}{
		{"OwnerReadsOwnProfile", "profiles", ann, annProfile, false, nil},
		{"OtherUserDenied", "profiles", bob, annProfile, true, nil},
		{"AdminReadsAnyProfile", "profiles", admin, annProfile, false, nil},
		{"NoDocumentIsNobodysOwn", "profiles", ann, nil, true, nil},
		{"OwnerMustBeAString", "profiles", ann, map[string]any{"user_id": []any{"ann"}}, true, nil},
		{"TeamMemberReads", "projects", ann, redProject, false, []string{"budget", "notes"}},
		{"OtherTeamDenied", "projects", bob, map[string]any{"team": "red"}, true, nil},
		{"LeadOfOtherTeamStillDenied", "projects", bob, redProject, true, nil},
		{"LeadOfOwnTeamSeesBudget", "projects", bob, map[string]any{"team": "blue", "lead": "bob"}, false, []string{"notes"}},
		{"NoClaimNoMatch", "projects", anon, map[string]any{"team": ""}, true, nil},
		{"AdminSeesBudget", "projects", admin, redProject, false, []string{"notes"}},
		{"FieldRuleWithoutRowRules", "open", ann, nil, false, []string{"salary"}},
		{"UndeclaredCollection", "other", anon, nil, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			col, _ := cfg.Collection(tc.coll)
			v := col.ViewOf(tc.r, tc.data)
			if v.Denied != tc.denied || !reflect.DeepEqual(v.Hidden, tc.hidden) {
				t.Fatalf("view = %+v, want denied %v hidden %v", v, tc.denied, tc.hidden)
			}
		})
	}
}

func TestViewFilters(t *testing.T) {
	cfg := schemafiletest.MustParse(t, readRules)
	col, _ := cfg.Collection("projects")
	v := col.ViewOf(collections.Reader{Subject: "ann", Claims: map[string]string{"team": "red"}}, map[string]any{"team": "red"})
	data := map[string]any{"team": "red", "budget": 9.0, "notes": "n", "name": "p",
		merge.ConflictsKey: map[string]any{"budget": []any{"b1"}, "name": []any{"n1"}}}
	got := v.Data(data)
	want := map[string]any{"team": "red", "name": "p", merge.ConflictsKey: map[string]any{"name": []any{"n1"}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Data = %v, want %v", got, want)
	}
	if _, ok := data["budget"]; !ok {
		t.Fatal("Data changed its input")
	}
	ops := []merge.FieldOp{
		{Op: merge.KindSet, Path: "budget", Value: json.RawMessage(`10`)},
		{Op: merge.KindSet, Path: "notes.deep", Value: json.RawMessage(`"x"`)},
		{Op: merge.KindSet, Path: "name", Value: json.RawMessage(`"q"`)},
		{Op: merge.KindSet, Path: merge.ConflictsKey, Value: json.RawMessage(`{"budget":[{"value":1}],"name":[{"value":"a"}]}`)},
	}
	fops := v.Ops(ops)
	if len(fops) != 2 || fops[0].Path != "name" || fops[1].Path != merge.ConflictsKey || strings.Contains(string(fops[1].Value), "budget") {
		t.Fatalf("Ops = %+v", fops)
	}
	if hidden := v.Ops(ops[:2]); hidden == nil || len(hidden) != 0 {
		t.Fatalf("ops on hidden fields only: %#v, want an empty non-nil list", hidden)
	}
	if vals := v.Values(map[string]any{"budget": 1, "name": "x"}); !reflect.DeepEqual(vals, map[string]any{"name": "x"}) {
		t.Fatalf("Values = %v", vals)
	}
	// A hidden text field's character metadata (who typed, how much) is
	// hidden with it, in data and in ops.
	text := map[string]any{"name": "p", merge.TextKey: map[string]any{"budget": map[string]any{"s": []any{"ann"}}, "name": map[string]any{"s": []any{"bo"}}}}
	if got := v.Data(text); !reflect.DeepEqual(got, map[string]any{"name": "p", merge.TextKey: map[string]any{"name": map[string]any{"s": []any{"bo"}}}}) {
		t.Fatalf("Data with text metadata = %v", got)
	}
	textOps := []merge.FieldOp{
		{Op: merge.KindSet, Path: merge.TextKey + ".budget", Value: json.RawMessage(`{"s":["ann"]}`)},
		{Op: merge.KindSet, Path: merge.TextKey, Value: json.RawMessage(`{"budget":{"s":["ann"]},"name":{"s":["bo"]}}`)},
		{Op: merge.KindSet, Path: merge.TextKey + ".name", Value: json.RawMessage(`{"s":["bo"]}`)},
	}
	if fops := v.Ops(textOps); len(fops) != 2 || strings.Contains(string(fops[0].Value), "ann") || fops[1].Path != merge.TextKey+".name" {
		t.Fatalf("Ops with text metadata = %+v", fops)
	}
	if d := collections.DeniedView.Data(data); d != nil {
		t.Fatalf("denied view shows %v", d)
	}
	if !col.Touches([]merge.FieldOp{{Op: merge.KindSet, Path: "team"}}, false) || !col.Touches(nil, true) ||
		col.Touches([]merge.FieldOp{{Op: merge.KindSet, Path: "name"}}, false) ||
		!col.Touches([]merge.FieldOp{{Op: merge.KindSet, Path: "lead"}}, false) {
		t.Fatal("Touches: want true for the team and lead fields and for a creation only")
	}
}

// The shipped file: a profile is read by its user and admins only, its
// email likewise; a project by its team and admins, its budget by leads
// and admins.
func TestShippedReadRules(t *testing.T) {
	cfg := schemafiletest.MustLoad(t, shipped)
	profiles, _ := cfg.Collection("profiles")
	projects, _ := cfg.Collection("projects")
	profile := map[string]any{"user_id": "ann", "email": "ann@example.com"}
	project := map[string]any{"team": "red", "budget": 10.0}
	for _, tc := range []struct {
		name   string
		col    *collections.Collection
		r      collections.Reader
		data   map[string]any
		denied bool
		hidden []string
	}{
		{"OwnProfile", profiles, collections.Reader{Subject: "ann", Roles: []string{"user"}}, profile, false, nil},
		{"OtherUsersProfile", profiles, collections.Reader{Subject: "bob", Roles: []string{"user"}}, profile, true, nil},
		{"AdminReadsProfile", profiles, collections.Reader{Subject: "root", Roles: []string{"admin"}}, profile, false, nil},
		{"TeamMember", projects, collections.Reader{Subject: "bob", Roles: []string{"user"}, Claims: map[string]string{"team": "red"}}, project, false, []string{"budget"}},
		{"TeamLead", projects, collections.Reader{Subject: "bob", Roles: []string{"user", "lead"}, Claims: map[string]string{"team": "red"}}, project, false, nil},
		{"OtherTeam", projects, collections.Reader{Subject: "cat", Roles: []string{"user", "lead"}, Claims: map[string]string{"team": "blue"}}, project, true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := tc.col.ViewOf(tc.r, tc.data)
			if v.Denied != tc.denied || !reflect.DeepEqual(v.Hidden, tc.hidden) {
				t.Fatalf("view = %+v, want denied %v hidden %v", v, tc.denied, tc.hidden)
			}
		})
	}
	if !slices.Equal(profiles.Fields["email"].ReadableBy, []string{"owner", "admin"}) {
		t.Fatalf("profiles.email readable_by %v", profiles.Fields["email"].ReadableBy)
	}
}
