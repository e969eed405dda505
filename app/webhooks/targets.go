package webhooks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Where deliveries may go. A webhook makes the service send requests to an
// address its registrant chose, from inside the network: without rules it
// would reach the sidecar's API (/v1.0/shutdown), cloud metadata services
// and internal hosts. The Guard refuses loopback, link-local, private
// (RFC 1918, IPv6 ULA), shared (CGNAT 100.64.0.0/10), unspecified and
// multicast addresses unless an allow-list entry names them, and this
// machine's protected ports (the sidecar's) always. It checks a URL when it
// is registered and every connection when it is made: a delivery resolves
// the host itself, checks every address, and dials only checked addresses,
// each connection checked again at the socket (net.Dialer.Control), so a
// name that resolves differently later (DNS rebinding) cannot reach a
// refused address. Redirects are not followed and proxies are not used.

// RefusedError is a target the Guard does not let deliveries reach.
type RefusedError struct {
	Target string // host:port as named
	Reason string
	// Allowable: an AUTOGLM_WEBHOOK_ALLOW entry would let it through (not
	// for protected ports).
	Allowable bool
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("webhook target %s refused: %s", e.Target, e.Reason)
}

// GuardOptions configure a Guard.
type GuardOptions struct {
	// Allow lists internal receivers deliveries may reach (parseAllow).
	Allow string
	// Protected ports are never reachable on this machine's addresses
	// (loopback, unspecified, its interfaces), whatever Allow says: the
	// sidecar's HTTP and gRPC ports and the app's own.
	Protected []int
	// Lookup resolves a host name (default: the system resolver).
	Lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	// DialTimeout bounds one connection attempt (default 10s).
	DialTimeout time.Duration
}

// Guard decides which addresses webhook deliveries may reach.
type Guard struct {
	allow     []allowRule
	protected map[uint16]bool
	local     map[netip.Addr]bool // this machine's interface addresses
	lookup    func(ctx context.Context, host string) ([]netip.Addr, error)
	timeout   time.Duration
}

// allowRule is one allow-list entry: a network or a host name, with an
// optional port (0: any).
type allowRule struct {
	prefix netip.Prefix
	host   string
	port   uint16
}

// parseAllow parses an allow-list: comma-separated entries, each an IP
// address or CIDR network ("10.0.0.0/8", "fd00::/8", "127.0.0.1"), an
// address with a port ("127.0.0.1:9000", "[::1]:9000"), or a host name with
// an optional port ("hooks.internal", "hooks.internal:8443"), matched
// exactly (case-insensitive) against the URL's host. A host name entry lets
// the name resolve to refused addresses; an address entry lets any name or
// literal reach those addresses.
func parseAllow(s string) ([]allowRule, error) {
	var out []allowRule
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e == "" {
			continue
		}
		r, err := parseAllowEntry(e)
		if err != nil {
			return nil, fmt.Errorf("webhook allow-list entry %q: %w", e, err)
		}
		out = append(out, r)
	}
	return out, nil
}

func parseAllowEntry(e string) (allowRule, error) {
	if p, err := netip.ParsePrefix(e); err == nil {
		return allowRule{prefix: p.Masked()}, nil
	}
	if a, err := netip.ParseAddr(e); err == nil {
		return allowRule{prefix: netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())}, nil
	}
	if ap, err := netip.ParseAddrPort(e); err == nil {
		a := ap.Addr().Unmap()
		if ap.Port() == 0 {
			return allowRule{}, errors.New("port 0")
		}
		return allowRule{prefix: netip.PrefixFrom(a, a.BitLen()), port: ap.Port()}, nil
	}
	host, port := e, uint16(0)
	if h, p, err := net.SplitHostPort(e); err == nil {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return allowRule{}, fmt.Errorf("port %q", p)
		}
		host, port = h, uint16(n)
	}
	if !validHostName(host) {
		return allowRule{}, errors.New("want an IP address, a CIDR network or a host name, each with an optional :port")
	}
	return allowRule{host: strings.ToLower(host), port: port}, nil
}

func validHostName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// NewGuard returns a Guard; an allow-list that does not parse is an error.
func NewGuard(o GuardOptions) (*Guard, error) {
	allow, err := parseAllow(o.Allow)
	if err != nil {
		return nil, err
	}
	g := &Guard{allow: allow, protected: map[uint16]bool{}, local: map[netip.Addr]bool{}, lookup: o.Lookup, timeout: o.DialTimeout}
	for _, p := range o.Protected {
		if p > 0 && p < 1<<16 {
			g.protected[uint16(p)] = true
		}
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok {
					g.local[ip.Unmap()] = true
				}
			}
		}
	}
	if g.lookup == nil {
		g.lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	if g.timeout <= 0 {
		g.timeout = 10 * time.Second
	}
	return g, nil
}

var (
	sharedNet = netip.MustParsePrefix("100.64.0.0/10") // RFC 6598, carrier-grade NAT
	thisNet   = netip.MustParsePrefix("0.0.0.0/8")     // RFC 1122 "this network"
	siteLocal = netip.MustParsePrefix("fec0::/10")     // deprecated IPv6 site-local
	nat64     = netip.MustParsePrefix("64:ff9b::/96")  // RFC 6052: an IPv4 address inside
	broadcast = netip.MustParseAddr("255.255.255.255")
)

// refusedClass names the class of a refused address, "" for a public one.
func refusedClass(a netip.Addr) string {
	a = a.Unmap()
	if nat64.Contains(a) {
		b := a.As16()
		a = netip.AddrFrom4([4]byte(b[12:]))
	}
	switch {
	case a.IsUnspecified() || thisNet.Contains(a):
		return "unspecified"
	case a.IsLoopback():
		return "loopback"
	case a.IsMulticast() || a == broadcast:
		return "multicast"
	case a.IsLinkLocalUnicast():
		return "link-local"
	case a.IsPrivate() || siteLocal.Contains(a):
		return "private"
	case sharedNet.Contains(a):
		return "shared (carrier-grade NAT)"
	}
	return ""
}

// permit reports whether a connection to a:port, reached through the name
// host ("" for none), is allowed.
func (g *Guard) permit(host string, a netip.Addr, port uint16) error {
	a = a.Unmap()
	target := net.JoinHostPort(host, strconv.Itoa(int(port)))
	if host == "" || host == a.String() {
		target = netip.AddrPortFrom(a, port).String()
	}
	if g.protected[port] && (a.IsLoopback() || a.IsUnspecified() || g.local[a]) {
		return &RefusedError{Target: target, Reason: fmt.Sprintf("port %d on this machine belongs to the sidecar or the service", port)}
	}
	class := refusedClass(a)
	if class == "" {
		return nil
	}
	for _, r := range g.allow {
		if r.port != 0 && r.port != port {
			continue
		}
		if r.host != "" && strings.EqualFold(r.host, host) || r.prefix.IsValid() && r.prefix.Contains(a) {
			return nil
		}
	}
	article := "a"
	if strings.ContainsAny(class[:1], "aeiou") {
		article = "an"
	}
	reason := fmt.Sprintf("%s is %s %s address", a, article, class)
	if host != "" && host != a.String() {
		reason = fmt.Sprintf("%s resolves to %s, %s %s address", host, a, article, class)
	}
	return &RefusedError{Target: target, Reason: reason, Allowable: true}
}

// resolve returns the addresses of host (itself when it is a literal).
func (g *Guard) resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a}, nil
	}
	addrs, err := g.lookup(ctx, host)
	if err == nil && len(addrs) == 0 {
		err = errors.New("no addresses")
	}
	return addrs, err
}

// check resolves host and checks every address it has.
func (g *Guard) check(ctx context.Context, host string, port uint16) ([]netip.Addr, error) {
	addrs, err := g.resolve(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", host, err)
	}
	for _, a := range addrs {
		if err := g.permit(host, a, port); err != nil {
			return nil, err
		}
	}
	return addrs, nil
}

// CheckURL checks a webhook URL as registered: an absolute http(s) URL
// whose host resolves only to addresses deliveries may reach.
func (g *Guard) CheckURL(ctx context.Context, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("url %q is not an absolute http(s) URL", raw)
	}
	port := uint16(80)
	if u.Scheme == "https" {
		port = 443
	}
	if p := u.Port(); p != "" {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return fmt.Errorf("url %q: port %q", raw, p)
		}
		port = uint16(n)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err = g.check(ctx, u.Hostname(), port); err != nil {
		var refused *RefusedError
		if !errors.As(err, &refused) {
			err = fmt.Errorf("url %q: %w", raw, err)
		}
	}
	return err
}

// DialContext connects to addr ("host:port") through the rules: the host is
// resolved here, every address checked, and only checked addresses are
// dialled, each checked again on its socket before it connects.
func (g *Guard) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("port %q: %w", p, err)
	}
	port := uint16(n)
	addrs, err := g.check(ctx, host, port)
	if err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: g.timeout, Control: func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return err
		}
		return g.permit(host, ap.Addr(), ap.Port())
	}}
	var first error
	for _, a := range addrs {
		c, err := d.DialContext(ctx, network, netip.AddrPortFrom(a, port).String())
		if err == nil {
			return c, nil
		}
		if first == nil {
			first = err
		}
	}
	return nil, first
}

// Client returns an HTTP client whose every connection goes through the
// rules. It uses no proxy (a proxy would connect on its behalf, unchecked)
// and does not follow redirects: a 3xx answer is a failed delivery.
func (g *Guard) Client(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         g.DialContext,
			ForceAttemptHTTP2:   true,
			MaxIdleConns:        100,
			IdleConnTimeout:     90 * time.Second,
			TLSHandshakeTimeout: 10 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
