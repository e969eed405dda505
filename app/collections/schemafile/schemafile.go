// Package schemafile reads a collections file (YAML) into the schema of
// package collections. It validates the file as it reads it and reports
// the file, line and column of every mistake; the schema's own invariants
// (collections.Field.Validate, collections.Collection.Validate) are checked
// through the schema's API, with their position in the file. It is the
// only package that knows the file format.
//
// The format is documented in config/collections.yaml (the shipped example)
// and docs/conflicts.md.
package schemafile

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/open-autoglm/autoglm/app/collections"
	"github.com/open-autoglm/autoglm/app/merge"
)

// LoadError is a mistake in a config file, with its position.
type LoadError struct {
	File   string
	Line   int // 1-based; 0 when unknown
	Column int
	Msg    string
}

func (e *LoadError) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
	if e.Column == 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Column, e.Msg)
}

// Unwrap makes errors.Is(err, collections.ErrInvalidConfig) hold.
func (e *LoadError) Unwrap() error { return collections.ErrInvalidConfig }

// Load reads and validates a collections file.
func Load(path string) (*collections.Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("collections: %w", err)
	}
	return Parse(path, data)
}

// Parse validates a collections file's contents; name is used in errors.
func Parse(name string, data []byte) (*collections.Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, yamlError(name, err)
	}
	f := &file{allowUnknown: true, defaults: collections.Default().Defaults}
	if len(root.Content) > 0 { // else an empty file: all defaults
		l := &loader{file: name}
		if err := l.config(f, root.Content[0]); err != nil {
			return nil, err
		}
	}
	c, err := collections.NewConfig(name, f.allowUnknown, f.defaults, f.cols, f.integrations)
	if err != nil {
		// Not reached: the loader checked the same invariants with their
		// positions.
		return nil, &LoadError{File: name, Msg: err.Error()}
	}
	return c, nil
}

// file is what the loader read, for collections.NewConfig.
type file struct {
	allowUnknown bool
	defaults     collections.Collection
	cols         []*collections.Collection
	integrations collections.Integrations
}

// yamlError turns a yaml.v3 syntax error ("yaml: line 3: ...") into a
// LoadError with the line.
func yamlError(file string, err error) error {
	msg := err.Error()
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	e := &LoadError{File: file, Msg: msg}
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, tail, ok := strings.Cut(rest, ":"); ok {
			if line, err := strconv.Atoi(n); err == nil {
				e.Line, e.Msg = line, strings.TrimSpace(tail)
			}
		}
	}
	return e
}

type loader struct{ file string }

func (l *loader) errf(n *yaml.Node, format string, args ...any) error {
	return &LoadError{File: l.file, Line: n.Line, Column: n.Column, Msg: fmt.Sprintf(format, args...)}
}

func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// mapping walks a mapping node, refusing duplicate keys and keys outside
// known (nil known: any key).
func (l *loader) mapping(n *yaml.Node, what string, known []string, fn func(key string, k, v *yaml.Node) error) error {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		if n.Tag == "!!null" {
			return nil // an empty section
		}
		return l.errf(n, "%s must be a mapping", what)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return l.errf(k, "%s: keys must be strings", what)
		}
		if k.Tag == "!!merge" {
			return l.errf(k, "%s: merge keys (<<) are not supported", what)
		}
		if seen[k.Value] {
			return l.errf(k, "%s: duplicate key %q", what, k.Value)
		}
		seen[k.Value] = true
		if known != nil && !slices.Contains(known, k.Value) {
			return l.errf(k, "%s: unknown key %q (want one of %s)", what, k.Value, strings.Join(known, ", "))
		}
		if err := fn(k.Value, k, v); err != nil {
			return err
		}
	}
	return nil
}

func (l *loader) str(n *yaml.Node, what string) (string, error) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		return "", l.errf(n, "%s must be a string", what)
	}
	return n.Value, nil
}

func (l *loader) boolean(n *yaml.Node, what string) (bool, error) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
		return false, l.errf(n, "%s must be true or false", what)
	}
	var b bool
	if err := n.Decode(&b); err != nil {
		return false, l.errf(n, "%s: %v", what, err)
	}
	return b, nil
}

func (l *loader) count(n *yaml.Node, what string, min int) (int, error) {
	n = resolve(n)
	var v int
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Decode(&v) != nil {
		return 0, l.errf(n, "%s must be an integer", what)
	}
	if v < min {
		return 0, l.errf(n, "%s must be at least %d, not %d", what, min, v)
	}
	return v, nil
}

func (l *loader) number(n *yaml.Node, what string) (float64, error) {
	n = resolve(n)
	var v float64
	if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") || n.Decode(&v) != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, l.errf(n, "%s must be a number", what)
	}
	return v, nil
}

// strings reads a list of strings; a single string is a list of one when
// single is set.
func (l *loader) strs(n *yaml.Node, what string, single bool) ([]string, error) {
	n = resolve(n)
	if single && n.Kind == yaml.ScalarNode {
		s, err := l.str(n, what)
		return []string{s}, err
	}
	if n.Kind != yaml.SequenceNode {
		return nil, l.errf(n, "%s must be a list of strings", what)
	}
	var out []string
	for _, e := range n.Content {
		s, err := l.str(e, what+" entries")
		if err != nil {
			return nil, err
		}
		if s == "" {
			return nil, l.errf(e, "%s: empty string", what)
		}
		if slices.Contains(out, s) {
			return nil, l.errf(e, "%s: %q listed twice", what, s)
		}
		out = append(out, s)
	}
	return out, nil
}

func (l *loader) path(n *yaml.Node, what string) (string, error) {
	p, err := l.str(n, what)
	if err != nil {
		return "", err
	}
	if err := merge.ValidatePath(p); err != nil {
		return "", l.errf(n, "%s %q: want a dot path of keys not starting with '_'", what, p)
	}
	return p, nil
}

var (
	topKeys        = []string{"allow_unknown", "defaults", "collections"}
	defaultKeys    = []string{"policy", "limits"}
	collectionKeys = []string{"policy", "limits", "owner_field", "read_roles", "write_roles", "fields", "state_machines", "events", "webhooks", "read_rules"}
	readRuleKeys   = []string{"owner", "claims", "roles"}
	webhookKeys    = []string{"id", "url", "secret_env"}
	limitKeys      = []string{"max_doc_bytes", "max_ops"}
	fieldKeys      = []string{"type", "required", "max_length", "min", "max", "enum", "writable_by", "readable_by"}
	machineKeys    = []string{"initial", "states", "transitions"}
	transitionKeys = []string{"from", "to", "roles"}
)

func (l *loader) config(c *file, n *yaml.Node) error {
	var cols *yaml.Node
	err := l.mapping(n, "the file", topKeys, func(key string, _, v *yaml.Node) (err error) {
		switch key {
		case "allow_unknown":
			c.allowUnknown, err = l.boolean(v, "allow_unknown")
		case "defaults":
			err = l.mapping(v, "defaults", defaultKeys, func(key string, _, v *yaml.Node) error {
				return l.common(&c.defaults, key, v, "defaults")
			})
		case "collections":
			cols = v // after defaults, wherever they appear
		}
		return err
	})
	if err != nil || cols == nil {
		return err
	}
	return l.mapping(cols, "collections", nil, func(name string, k, v *yaml.Node) error {
		if !collections.ValidName(name) {
			return l.errf(k, "collection name %q: want [a-z][a-z0-9_-]{0,63}", name)
		}
		col := &collections.Collection{Name: name, Policy: c.defaults.Policy, Limits: c.defaults.Limits, Declared: true,
			Fields: map[string]*collections.Field{}, StateMachines: map[string]*collections.StateMachine{}}
		in, err := l.collection(col, v)
		if err != nil {
			return err
		}
		c.cols = append(c.cols, col)
		if in.Events || len(in.Webhooks) > 0 {
			if c.integrations == nil {
				c.integrations = collections.Integrations{}
			}
			c.integrations[name] = in
		}
		return nil
	})
}

// common reads the keys a collection shares with the defaults.
func (l *loader) common(col *collections.Collection, key string, v *yaml.Node, where string) error {
	switch key {
	case "policy":
		s, err := l.str(v, where+": policy")
		if err != nil {
			return err
		}
		p, err := merge.ParsePolicy(s)
		if err != nil || s == "" {
			return l.errf(v, "%s: unknown policy %q (want lww, crdt, strict or manual)", where, s)
		}
		col.Policy = p
	case "limits":
		return l.mapping(v, where+": limits", limitKeys, func(key string, _, v *yaml.Node) (err error) {
			switch key {
			case "max_doc_bytes":
				col.Limits.MaxDocBytes, err = l.count(v, where+": max_doc_bytes", 1)
			case "max_ops":
				col.Limits.MaxOps, err = l.count(v, where+": max_ops", 1)
			}
			return err
		})
	}
	return nil
}

// collection reads a collection's schema into col and returns its
// integration (events and webhooks).
func (l *loader) collection(col *collections.Collection, n *yaml.Node) (collections.Integration, error) {
	where := "collection " + col.Name
	var in collections.Integration
	var machines *yaml.Node
	err := l.mapping(n, where, collectionKeys, func(key string, _, v *yaml.Node) (err error) {
		switch key {
		case "policy", "limits":
			err = l.common(col, key, v, where)
		case "owner_field":
			col.OwnerField, err = l.path(v, where+": owner_field")
		case "read_roles":
			col.ReadRoles, err = l.strs(v, where+": read_roles", false)
		case "write_roles":
			col.WriteRoles, err = l.strs(v, where+": write_roles", false)
		case "fields":
			err = l.mapping(v, where+": fields", nil, func(p string, k, v *yaml.Node) error {
				if merge.ValidatePath(p) != nil {
					return l.errf(k, "%s: field %q: want a dot path of keys not starting with '_'", where, p)
				}
				f, err := l.field(p, v, where)
				col.Fields[p] = f
				return err
			})
		case "state_machines":
			machines = v // after fields, to cross-check their types
		case "events":
			in.Events, err = l.boolean(v, where+": events")
		case "webhooks":
			in.Webhooks, err = l.webhooks(v, where)
		case "read_rules":
			err = l.readRules(col, v, where)
		}
		return err
	})
	if err == nil {
		err = l.checkReadRules(col, n, where)
	}
	if err != nil || machines == nil {
		return in, err
	}
	return in, l.mapping(machines, where+": state_machines", nil, func(p string, k, v *yaml.Node) error {
		var se *collections.SchemaError
		if errors.As(col.CheckStateField(p), &se) {
			return l.errf(k, "%s: %s", where, se.Msg)
		}
		m, err := l.machine(p, v, where)
		col.StateMachines[p] = m
		return err
	})
}

func (l *loader) field(p string, n *yaml.Node, where string) (*collections.Field, error) {
	f := &collections.Field{Path: p, MaxLength: -1}
	what := fmt.Sprintf("%s: field %s", where, p)
	var maxLen, enum, minN, maxN *yaml.Node
	err := l.mapping(n, what, fieldKeys, func(key string, _, v *yaml.Node) (err error) {
		switch key {
		case "type":
			var s string
			if s, err = l.str(v, what+": type"); err == nil {
				if s == "" || !collections.Type(s).Valid() {
					return l.errf(v, "%s: unknown type %q (want string, text, number, integer, bool, object, array or set)", what, s)
				}
				f.Type = collections.Type(s)
			}
		case "required":
			f.Required, err = l.boolean(v, what+": required")
		case "max_length":
			maxLen = v
			f.MaxLength, err = l.count(v, what+": max_length", 0)
		case "min":
			minN = v
			var x float64
			x, err = l.number(v, what+": min")
			f.Min = &x
		case "max":
			maxN = v
			var x float64
			x, err = l.number(v, what+": max")
			f.Max = &x
		case "enum":
			enum = v
			f.Enum, err = l.enum(v, what)
		case "writable_by":
			f.WritableBy, err = l.strs(v, what+": writable_by", false)
		case "readable_by":
			f.ReadableBy, err = l.strs(v, what+": readable_by", false)
			switch {
			case err != nil:
			case len(f.ReadableBy) == 0:
				err = l.errf(v, "%s: readable_by needs at least one role (or owner)", what)
			case strings.Contains(p, "."):
				// A write below a hidden field would create or replace the
				// objects above it, which readers see: hiding is per
				// top-level field (and hides everything below it).
				err = l.errf(v, "%s: readable_by is declared on top-level fields only (it hides everything below them)", what)
			}
		}
		return err
	})
	if err != nil {
		return f, err
	}
	var se *collections.SchemaError
	if err := f.Validate(); errors.As(err, &se) {
		// The rule at fault, in the file: the key's value or, for an enum
		// value, the value itself.
		at := map[string]*yaml.Node{"max_length": maxLen, "enum": enum, "min": minN, "max": maxN}[se.Key]
		if at == nil {
			at = n
		} else if se.Index >= 0 {
			at = resolve(at).Content[se.Index]
		}
		return f, l.errf(at, "%s: %s", what, se.Msg)
	}
	return f, nil
}

// enum reads a list of JSON scalars.
func (l *loader) enum(n *yaml.Node, what string) ([]any, error) {
	n = resolve(n)
	if n.Kind != yaml.SequenceNode || len(n.Content) == 0 {
		return nil, l.errf(n, "%s: enum must be a non-empty list", what)
	}
	var out []any
	for _, e := range n.Content {
		e = resolve(e)
		if e.Kind != yaml.ScalarNode {
			return nil, l.errf(e, "%s: enum values must be strings, numbers, booleans or null", what)
		}
		var v any
		switch e.Tag {
		case "!!str":
			v = e.Value
		case "!!int", "!!float":
			x, err := l.number(e, what+": enum value")
			if err != nil {
				return nil, err
			}
			v = x
		case "!!bool":
			b, err := l.boolean(e, what+": enum value")
			if err != nil {
				return nil, err
			}
			v = b
		case "!!null":
			v = nil
		default:
			return nil, l.errf(e, "%s: enum value %q has unsupported type %s", what, e.Value, e.Tag)
		}
		if slices.ContainsFunc(out, func(o any) bool { return collections.ValueText(o) == collections.ValueText(v) }) {
			return nil, l.errf(e, "%s: enum value %s listed twice", what, collections.ValueText(v))
		}
		out = append(out, v)
	}
	return out, nil
}

func (l *loader) machine(p string, n *yaml.Node, where string) (*collections.StateMachine, error) {
	m := &collections.StateMachine{Field: p}
	what := fmt.Sprintf("%s: state machine %s", where, p)
	var initial, states, transitions *yaml.Node
	err := l.mapping(n, what, machineKeys, func(key string, _, v *yaml.Node) (err error) {
		switch key {
		case "initial":
			initial = v
			m.Initial, err = l.str(v, what+": initial")
		case "states":
			states = v
			m.States, err = l.strs(v, what+": states", false)
		case "transitions":
			transitions = v
		}
		return err
	})
	switch {
	case err != nil:
		return m, err
	case len(m.States) > 0 && initial == nil:
		return m, l.errf(n, "%s: needs an initial state", what)
	}
	// The machine's invariants are its own (StateMachine.Validate), checked
	// after each transition entry so the first mistake in the file is the
	// one reported. entries[i] holds the nodes, by key, of the file's
	// transition entry that transition i comes from ("transitions": the
	// entry itself), to place the errors.
	var entries []map[string]*yaml.Node
	check := func() error {
		var se *collections.SchemaError
		if !errors.As(m.Validate(), &se) {
			return nil
		}
		at := n
		switch se.Key {
		case "initial":
			at = initial
		case "states":
			if se.Index >= 0 {
				at = resolve(states).Content[se.Index]
			}
		case "from", "to", "transitions", "roles":
			at = entries[se.Index][se.Key]
		}
		if at == nil {
			at = n
		}
		return l.errf(at, "%s: %s", what, se.Msg)
	}
	if err := check(); err != nil || transitions == nil {
		return m, err // no transitions: a field fixed at its initial state
	}
	tn := resolve(transitions)
	if tn.Kind != yaml.SequenceNode {
		return m, l.errf(tn, "%s: transitions must be a list", what)
	}
	for _, t := range tn.Content {
		var from, to, roles []string
		nodes := map[string]*yaml.Node{"transitions": t}
		err := l.mapping(t, what+": transition", transitionKeys, func(key string, _, v *yaml.Node) (err error) {
			nodes[key] = v
			switch key {
			case "from":
				from, err = l.strs(v, what+": from", true)
			case "to":
				to, err = l.strs(v, what+": to", true)
			case "roles":
				roles, err = l.strs(v, what+": roles", false)
			}
			return err
		})
		switch {
		case err != nil:
			return m, err
		case resolve(t).Kind != yaml.MappingNode:
			return m, l.errf(t, "%s: a transition must be a mapping with from, to and roles", what)
		case nodes["from"] == nil || nodes["to"] == nil:
			return m, l.errf(t, "%s: a transition needs from and to", what)
		}
		for _, f := range from {
			for _, s := range to {
				m.Transitions = append(m.Transitions, collections.Transition{From: f, To: s, Roles: roles})
				entries = append(entries, nodes)
			}
		}
		if err := check(); err != nil {
			return m, err
		}
	}
	return m, nil
}

// webhooks reads a collection's webhook list: [{id, url, secret_env}].
func (l *loader) webhooks(n *yaml.Node, where string) ([]collections.Webhook, error) {
	n = resolve(n)
	if n.Kind != yaml.SequenceNode {
		return nil, l.errf(n, "%s: webhooks: want a list of {id, url, secret_env}", where)
	}
	var out []collections.Webhook
	for _, item := range n.Content {
		var w collections.Webhook
		err := l.mapping(item, where+": webhook", webhookKeys, func(key string, _, v *yaml.Node) (err error) {
			switch key {
			case "id":
				w.ID, err = l.str(v, where+": webhook id")
			case "url":
				w.URL, err = l.str(v, where+": webhook url")
			case "secret_env":
				w.SecretEnv, err = l.str(v, where+": webhook secret_env")
			}
			return err
		})
		if err != nil {
			return nil, err
		}
		u, perr := url.Parse(w.URL)
		switch {
		case !webhookID.MatchString(w.ID):
			return nil, l.errf(item, "%s: webhook id %q: want [a-z0-9][a-z0-9_-]{0,63}", where, w.ID)
		case perr != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			return nil, l.errf(item, "%s: webhook %s: url %q is not an http(s) URL", where, w.ID, w.URL)
		case w.SecretEnv == "":
			return nil, l.errf(item, "%s: webhook %s: secret_env (the variable holding its signing secret) is required", where, w.ID)
		}
		for _, o := range out {
			if o.ID == w.ID {
				return nil, l.errf(item, "%s: webhook id %q is used twice", where, w.ID)
			}
		}
		out = append(out, w)
	}
	return out, nil
}

var webhookID = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// readRules reads a collection's row rules: {owner, claims, roles}.
func (l *loader) readRules(col *collections.Collection, n *yaml.Node, where string) error {
	what := where + ": read_rules"
	rows := &collections.ReadRules{}
	err := l.mapping(n, what, readRuleKeys, func(key string, _, v *yaml.Node) (err error) {
		switch key {
		case "owner":
			rows.Owner, err = l.boolean(v, what+": owner")
		case "roles":
			rows.Roles, err = l.strs(v, what+": roles", false)
		case "claims":
			rows.Claims = map[string]string{}
			err = l.mapping(v, what+": claims", nil, func(p string, k, v *yaml.Node) error {
				if merge.ValidatePath(p) != nil {
					return l.errf(k, "%s: claims: field %q: want a dot path of keys not starting with '_'", what, p)
				}
				claim, err := l.str(v, what+": claims: "+p)
				if err == nil && claim == "" {
					err = l.errf(v, "%s: claims: %s: the claim name is empty", what, p)
				}
				rows.Claims[p] = claim
				return err
			})
		}
		return err
	})
	if err != nil {
		return err
	}
	if !rows.Owner && len(rows.Claims) == 0 && len(rows.Roles) == 0 {
		return l.errf(n, "%s: declare at least one of owner, claims, roles (or leave read_rules out)", what)
	}
	col.Rows = rows
	return nil
}

// checkReadRules cross-checks the read rules once the collection is read
// (collections.Collection.Validate), and records the fields they look at.
func (l *loader) checkReadRules(col *collections.Collection, n *yaml.Node, where string) error {
	var se *collections.SchemaError
	if err := col.Validate(); errors.As(err, &se) {
		msg := se.Msg
		if se.Path != "" {
			msg = "field " + se.Path + ": " + msg
		}
		return l.errf(n, "%s: %s", where, msg)
	}
	return nil
}
