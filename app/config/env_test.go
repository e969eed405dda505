package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// Every setting but the build's version is read from the variable its tag
// names, with the rules of its type.
func TestEveryFieldReadsItsVariable(t *testing.T) {
	typ := reflect.TypeOf(Config{})
	for i := range typ.NumField() {
		f := typ.Field(i)
		name := f.Tag.Get("env")
		if name == "" {
			if f.Name != "Version" {
				t.Errorf("%s has no env tag", f.Name)
			}
			continue
		}
		// A value other than the default, and one its type refuses ("": none).
		values := map[reflect.Kind][2]string{
			reflect.String:  {"from-env", ""},
			reflect.Int:     {"99999", "-1"},
			reflect.Int64:   {"99999", "-1"},
			reflect.Float64: {"7.5", "-1"},
			reflect.Bool:    {"true", "maybe"},
			reflect.Slice:   {" a, b ,", ""},
		}[f.Type.Kind()]
		if f.Type == reflect.TypeOf(time.Duration(0)) {
			values = [2]string{"1234s", "0s"}
		}
		env := map[string]string{name: values[0]}
		switch name { // settings that Validate checks further
		case "AUTOGLM_HOST":
			env[name] = "0.0.0.0"
		case "AUTOGLM_LOG_FORMAT":
			env[name] = "json"
		case "AUTOGLM_AUTH":
			env[name] = "jwt"
			env["AUTOGLM_JWT_SECRET"] = strings.Repeat("s", 32)
			env["APP_API_TOKEN"] = "token"
		}
		c, err := FromEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
		if err != nil {
			t.Errorf("%s=%q: %v", name, env[name], err)
			continue
		}
		if reflect.DeepEqual(reflect.ValueOf(c).Field(i).Interface(), reflect.ValueOf(Default()).Field(i).Interface()) {
			t.Errorf("%s=%q left %s at its default", name, env[name], f.Name)
		}
		invalid := values[1]
		if invalid == "" {
			continue
		}
		_, err = FromEnv(func(k string) (string, bool) { return invalid, k == name })
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s=%q: got %v, want an error naming it", name, invalid, err)
		}
	}
}

// The value named by the off tag turns a duration off; any other value
// that is not a positive duration is refused.
func TestCompactionIntervalOff(t *testing.T) {
	look := func(v string) func(string) (string, bool) {
		return func(k string) (string, bool) { return v, k == "AUTOGLM_COMPACTION_INTERVAL" }
	}
	if c, err := FromEnv(look("0")); err != nil || c.CompactionInterval != 0 {
		t.Fatalf("AUTOGLM_COMPACTION_INTERVAL=0: %v, %v; want off", c.CompactionInterval, err)
	}
	if _, err := FromEnv(look("0s")); err == nil {
		t.Fatal("AUTOGLM_COMPACTION_INTERVAL=0s accepted")
	}
	if c, err := FromEnv(look("90s")); err != nil || c.CompactionInterval != 90*time.Second {
		t.Fatalf("AUTOGLM_COMPACTION_INTERVAL=90s: %v, %v", c.CompactionInterval, err)
	}
}
