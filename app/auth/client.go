package auth

import "strings"

// ClientID returns the client id the service uses for a client that asked
// for requested: op-id sequences, idempotency, acks and the author of its
// changes all hang on it.
//
// While authentication is off (anonymous identities) it is requested
// itself. With authentication on it is bound to the token's subject:
// "<requested>@<subject>", where any '%' or '@' in requested is
// percent-encoded. The part before the first '@' therefore never holds an
// '@', so the subject is exactly what follows it, and no other subject can
// produce the same id, whatever it asks for. One user still runs several
// clients (tabs, devices), each with its own op ids, by asking for
// different ids. A requested id that is already bound to this subject is
// kept as it is, so a client that reconnects with the id its welcome
// returned keeps its ops.
func ClientID(id Identity, requested string) string {
	if id.Anonymous || requested == "" {
		return requested
	}
	if head, sub, ok := strings.Cut(requested, "@"); ok && head != "" && sub == id.Subject {
		return requested
	}
	return clientEscaper.Replace(requested) + "@" + id.Subject
}

var clientEscaper = strings.NewReplacer("%", "%25", "@", "%40")
