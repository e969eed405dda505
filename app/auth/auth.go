// Package auth verifies bearer tokens (JWT) and decides what an identity
// may do with a collection: read and write roles, the owner field, and the
// roles workflow rules see.
//
// Tokens: HS256 with a shared secret for local use, RS256/ES256 through a
// JWKS URL in production (keys refreshed in the background). Claims used:
// sub (the user id), roles (array of strings; "role" as a single string is
// accepted too), exp (required), and iss/aud when configured. Every other
// top-level claim whose value is a string (such as "team") is kept in the
// identity's Claims, for the collections' claim-match read rules.
package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"

	"github.com/open-autoglm/autoglm/app/collections"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/merge"
)

// Identity is who is calling.
type Identity struct {
	Subject string
	Roles   []string
	// Claims are the token's other string claims ("team": "t1"), which
	// claim-match read rules compare with document fields.
	Claims  map[string]string
	Expires time.Time // zero: never (authentication off)
	// Anonymous marks the identity used while authentication is off.
	Anonymous bool
}

// HasRole reports whether the identity has role.
func (id Identity) HasRole(role string) bool { return slices.Contains(id.Roles, role) }

// Verifier turns a bearer token into an identity.
type Verifier interface {
	Verify(ctx context.Context, token string) (Identity, error)
}

// Options configure a JWT verifier.
type Options struct {
	Secret   []byte // HS256 shared secret
	JWKSURL  string // RS256/ES256 keys
	Issuer   string // required iss, if set
	Audience string // required aud, if set
	Leeway   time.Duration
	Now      func() time.Time
}

// JWT verifies tokens signed with a shared secret or keys from a JWKS URL.
type JWT struct {
	opt     Options
	keyfunc jwt.Keyfunc
	methods []string
	close   func()
}

var _ Verifier = (*JWT)(nil)

// NewJWT returns a verifier. With a JWKS URL the key set is fetched now and
// refreshed in the background until Close.
func NewJWT(ctx context.Context, opt Options) (*JWT, error) {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Leeway == 0 {
		opt.Leeway = 30 * time.Second
	}
	j := &JWT{opt: opt, close: func() {}}
	switch {
	case len(opt.Secret) > 0 && opt.JWKSURL != "":
		return nil, errors.New("auth: set either a shared secret or a JWKS URL, not both")
	case len(opt.Secret) > 0:
		if len(opt.Secret) < 32 {
			return nil, errors.New("auth: the HS256 secret must be at least 32 bytes")
		}
		j.methods = []string{jwt.SigningMethodHS256.Alg()}
		j.keyfunc = func(*jwt.Token) (any, error) { return opt.Secret, nil }
	case opt.JWKSURL != "":
		kctx, cancel := context.WithCancel(context.Background())
		k, err := keyfunc.NewDefaultCtx(kctx, []string{opt.JWKSURL})
		if err != nil {
			cancel()
			return nil, fmt.Errorf("auth: JWKS %s: %w", opt.JWKSURL, err)
		}
		j.methods = []string{jwt.SigningMethodRS256.Alg(), jwt.SigningMethodES256.Alg()}
		j.keyfunc = k.Keyfunc
		j.close = cancel
	default:
		return nil, errors.New("auth: a shared secret or a JWKS URL is required")
	}
	return j, nil
}

// Close stops refreshing keys.
func (j *JWT) Close() { j.close() }

type claims struct {
	jwt.RegisteredClaims
	Roles []string `json:"roles,omitempty"`
	Role  string   `json:"role,omitempty"`
	// Extra holds the other string claims.
	Extra map[string]string `json:"-"`
}

// registered are the claims with a meaning of their own, never copied to
// Identity.Claims.
var registered = []string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "roles", "role"}

func (c *claims) UnmarshalJSON(b []byte) error {
	type plain claims
	if err := json.Unmarshal(b, (*plain)(c)); err != nil {
		return err
	}
	var all map[string]any
	if err := json.Unmarshal(b, &all); err != nil {
		return err
	}
	for k, v := range all {
		if s, ok := v.(string); ok && !slices.Contains(registered, k) {
			if c.Extra == nil {
				c.Extra = map[string]string{}
			}
			c.Extra[k] = s
		}
	}
	return nil
}

// Verify checks the token's signature, algorithm, expiry, issuer and
// audience, and returns the identity it carries.
func (j *JWT) Verify(_ context.Context, token string) (Identity, error) {
	if token == "" {
		return Identity{}, core.Errorf(core.CodeUnauthorized, "a bearer token is required")
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(j.methods),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(j.opt.Leeway),
		jwt.WithTimeFunc(j.opt.Now),
	}
	if j.opt.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(j.opt.Issuer))
	}
	if j.opt.Audience != "" {
		opts = append(opts, jwt.WithAudience(j.opt.Audience))
	}
	var c claims
	if _, err := jwt.ParseWithClaims(token, &c, j.keyfunc, opts...); err != nil {
		if errors.Is(err, jwt.ErrTokenExpired) {
			return Identity{}, core.Errorf(core.CodeUnauthorized, "token expired")
		}
		return Identity{}, core.Errorf(core.CodeUnauthorized, "invalid token")
	}
	if c.Subject == "" {
		return Identity{}, core.Errorf(core.CodeUnauthorized, "token has no subject")
	}
	roles := c.Roles
	if c.Role != "" {
		roles = append(roles, c.Role)
	}
	return Identity{Subject: c.Subject, Roles: roles, Claims: c.Extra, Expires: c.ExpiresAt.Time}, nil
}

// BearerToken extracts the token from an Authorization header value.
func BearerToken(header string) string {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}

// Policy decides access to collections for identities.
type Policy struct {
	Collections *collections.Config
	// Enforce is false while authentication is off: then only the data
	// rules (field rules, workflows with the claimed roles) apply.
	Enforce bool
}

// CanRead returns nil when id may read collection coll.
func (p Policy) CanRead(id Identity, coll string) error {
	if !p.Enforce {
		return nil
	}
	col, _ := p.Collections.Collection(coll)
	if !col.CanRead(id.Roles) {
		return core.Errorf(core.CodeForbidden, "reading %s needs one of the roles %v", coll, col.ReadRoles)
	}
	return nil
}

// Rules reports whether reading coll depends on its read rules (row rules
// or readable_by fields), which are enforced with authentication on.
func (p Policy) Rules(coll string) bool {
	if !p.Enforce {
		return false
	}
	col, _ := p.Collections.Collection(coll)
	return col.HasReadRules()
}

// View is what id may see of a document of coll whose data is data: the
// collection's read rules evaluated for the identity (see
// collections.Collection.ViewOf). It does not check read_roles (CanRead
// does). With authentication off it shows everything.
func (p Policy) View(id Identity, coll string, data map[string]any) collections.View {
	if !p.Enforce {
		return collections.View{}
	}
	col, _ := p.Collections.Collection(coll)
	return col.ViewOf(collections.Reader{Subject: id.Subject, Roles: id.Roles, Claims: id.Claims}, data)
}

// DocView is View on a stored document (nil: none yet).
func (p Policy) DocView(id Identity, coll string, d *core.Document) collections.View {
	if d == nil {
		return p.View(id, coll, nil)
	}
	return p.View(id, coll, d.Data())
}

// Touches reports whether one of changes of a document of coll may change
// who sees what of it: it (re)creates the document or changes a field the
// read rules look at (a deletion shows to those who saw the document).
func (p Policy) Touches(coll string, changes ...core.Change) bool {
	if !p.Rules(coll) {
		return false
	}
	col, _ := p.Collections.Collection(coll)
	for _, c := range changes {
		if !c.Deleted && col.Touches(c.Ops, c.Created) {
			return true
		}
	}
	return false
}

// CanWrite returns nil when id may write a document of coll whose data
// (before or after the write; nil for none) is data: the collection's write
// roles, and its owner field — a document naming another user as its owner
// is theirs alone, and nobody may hand a document to someone else.
func (p Policy) CanWrite(id Identity, coll string, data map[string]any) error {
	if !p.Enforce {
		return nil
	}
	col, _ := p.Collections.Collection(coll)
	if !col.CanWrite(id.Roles) {
		return core.Errorf(core.CodeForbidden, "writing %s needs one of the roles %v", coll, col.WriteRoles)
	}
	if col.OwnerField == "" || data == nil {
		return nil
	}
	if owner, ok := merge.Lookup(data, col.OwnerField); ok && owner != id.Subject {
		return core.Errorf(core.CodeForbidden, "this document belongs to another user")
	}
	return nil
}
