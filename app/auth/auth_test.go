package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/open-autoglm/autoglm/app/auth"
	"github.com/open-autoglm/autoglm/app/collections/schemafile/schemafiletest"
	"github.com/open-autoglm/autoglm/app/core"
	"github.com/open-autoglm/autoglm/app/internal/testutil"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func sign(t testing.TB, method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func claims(sub string, exp time.Duration, roles ...string) jwt.MapClaims {
	c := jwt.MapClaims{"sub": sub, "exp": time.Now().Add(exp).Unix(), "iss": "autoglm-test", "aud": "sync"}
	if len(roles) > 0 {
		c["roles"] = roles
	}
	return c
}

func TestHS256(t *testing.T) {
	v, err := auth.NewJWT(context.Background(), auth.Options{Secret: secret, Issuer: "autoglm-test", Audience: "sync"})
	if err != nil {
		t.Fatal(err)
	}
	good := sign(t, jwt.SigningMethodHS256, secret, "", claims("u1", time.Hour, "editor"))
	id, err := v.Verify(context.Background(), good)
	if err != nil || id.Subject != "u1" || !id.HasRole("editor") || id.Expires.IsZero() {
		t.Fatalf("good token: %+v %v", id, err)
	}
	noneTok := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodNone, claims("u1", time.Hour))
		s, _ := tok.SignedString(jwt.UnsafeAllowNoneSignatureType)
		return s
	}()
	bad := map[string]string{
		"Empty":       "",
		"Garbage":     "not.a.jwt",
		"Expired":     sign(t, jwt.SigningMethodHS256, secret, "", claims("u1", -time.Hour)),
		"WrongSecret": sign(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-xx"), "", claims("u1", time.Hour)),
		"AlgNone":     noneTok,
		"HS512":       sign(t, jwt.SigningMethodHS512, secret, "", claims("u1", time.Hour)),
		"NoExpiry":    sign(t, jwt.SigningMethodHS256, secret, "", jwt.MapClaims{"sub": "u1", "iss": "autoglm-test", "aud": "sync"}),
		"NoSubject":   sign(t, jwt.SigningMethodHS256, secret, "", jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix(), "iss": "autoglm-test", "aud": "sync"}),
		"WrongIssuer": sign(t, jwt.SigningMethodHS256, secret, "", jwt.MapClaims{"sub": "u1", "exp": time.Now().Add(time.Hour).Unix(), "iss": "evil", "aud": "sync"}),
		"WrongAud":    sign(t, jwt.SigningMethodHS256, secret, "", jwt.MapClaims{"sub": "u1", "exp": time.Now().Add(time.Hour).Unix(), "iss": "autoglm-test", "aud": "other"}),
	}
	for name, tok := range bad {
		t.Run(name, func(t *testing.T) {
			if _, err := v.Verify(context.Background(), tok); core.CodeOf(err) != core.CodeUnauthorized {
				t.Fatalf("got %v, want unauthorized", err)
			}
		})
	}
	if _, err := auth.NewJWT(context.Background(), auth.Options{Secret: []byte("short")}); err == nil {
		t.Fatal("a short secret was accepted")
	}
}

// enforced is the enforced policy of the collections file text.
func enforced(t testing.TB, text string) auth.Policy {
	t.Helper()
	return auth.Policy{Collections: schemafiletest.MustParse(t, text), Enforce: true}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// TestJWKS verifies RS256 and ES256 tokens against a key set served over
// HTTP (loopback), and refuses a token signed by a key not in the set.
func TestJWKS(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	pad := func(n *big.Int) []byte { b := make([]byte, 32); n.FillBytes(b); return b }
	set := map[string]any{"keys": []map[string]any{
		{"kty": "RSA", "kid": "r1", "alg": "RS256", "use": "sig", "n": b64(rsaKey.N.Bytes()), "e": b64(big.NewInt(int64(rsaKey.E)).Bytes())},
		{"kty": "EC", "kid": "e1", "alg": "ES256", "use": "sig", "crv": "P-256", "x": b64(pad(ecKey.X)), "y": b64(pad(ecKey.Y))},
	}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	}))
	defer srv.Close()
	v, err := auth.NewJWT(context.Background(), auth.Options{JWKSURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	for name, tok := range map[string]string{
		"RS256": sign(t, jwt.SigningMethodRS256, rsaKey, "r1", claims("u2", time.Hour, "approver")),
		"ES256": sign(t, jwt.SigningMethodES256, ecKey, "e1", claims("u3", time.Hour)),
	} {
		t.Run(name, func(t *testing.T) {
			var id auth.Identity
			var err error
			// The first key set fetch runs in the background.
			testutil.Eventually(t, 5*time.Second, "the token verifies", func() bool {
				id, err = v.Verify(context.Background(), tok)
				return err == nil
			})
			if !strings.HasPrefix(id.Subject, "u") {
				t.Fatalf("identity %+v", id)
			}
		})
	}
	forged := sign(t, jwt.SigningMethodRS256, other, "r1", claims("u2", time.Hour, "admin"))
	if _, err := v.Verify(context.Background(), forged); core.CodeOf(err) != core.CodeUnauthorized {
		t.Fatalf("forged RS256 token: %v", err)
	}
	// An HS256 token "signed" with the public key must not pass (algorithm
	// confusion).
	confused := sign(t, jwt.SigningMethodHS256, []byte(b64(rsaKey.N.Bytes())), "r1", claims("u2", time.Hour))
	if _, err := v.Verify(context.Background(), confused); core.CodeOf(err) != core.CodeUnauthorized {
		t.Fatalf("algorithm confusion: %v", err)
	}
}

func TestPolicy(t *testing.T) {
	p := enforced(t, `
collections:
  profiles:
    owner_field: user_id
    read_roles: [user]
    write_roles: [user]
`)
	ann := auth.Identity{Subject: "ann", Roles: []string{"user"}}
	bob := auth.Identity{Subject: "bob", Roles: []string{"user"}}
	guest := auth.Identity{Subject: "guest"}
	annDoc := map[string]any{"user_id": "ann"}
	cases := []struct {
		name string
		err  error
		want core.Code
	}{
		{"ReadWithRole", p.CanRead(ann, "profiles"), ""},
		{"ReadWithoutRole", p.CanRead(guest, "profiles"), core.CodeForbidden},
		{"WriteOwn", p.CanWrite(ann, "profiles", annDoc), ""},
		{"WriteOthers", p.CanWrite(bob, "profiles", annDoc), core.CodeForbidden},
		{"WriteNew", p.CanWrite(bob, "profiles", nil), ""},
		{"GiveAway", p.CanWrite(ann, "profiles", map[string]any{"user_id": "bob"}), core.CodeForbidden},
		{"WriteWithoutRole", p.CanWrite(guest, "profiles", nil), core.CodeForbidden},
		{"UnlistedCollection", p.CanWrite(guest, "misc", nil), ""},
		{"Off", auth.Policy{Collections: p.Collections}.CanWrite(guest, "profiles", annDoc), ""},
	}
	for _, c := range cases {
		if got := core.CodeOf(c.err); got != c.want {
			t.Errorf("%s: %q (%v), want %q", c.name, got, c.err, c.want)
		}
	}
}

// The token's other string claims reach the identity, for claim-match read
// rules; registered claims, roles and non-string values do not.
func TestClaims(t *testing.T) {
	v, err := auth.NewJWT(context.Background(), auth.Options{Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	c := claims("u1", time.Hour, "user")
	c["team"], c["tenant"], c["level"], c["role"], c["groups"] = "red", "acme", 3, "admin", []string{"a"}
	id, err := v.Verify(context.Background(), sign(t, jwt.SigningMethodHS256, secret, "", c))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"team": "red", "tenant": "acme"}
	if len(id.Claims) != len(want) || id.Claims["team"] != "red" || id.Claims["tenant"] != "acme" {
		t.Fatalf("claims = %v, want %v", id.Claims, want)
	}
	if !id.HasRole("user") || !id.HasRole("admin") || id.Subject != "u1" {
		t.Fatalf("identity = %+v", id)
	}
}
