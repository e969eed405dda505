package daprstore

// Classify maps a Dapr state or lock API error to the service's outcomes:
// a lost race (an ETag mismatch, a guarded create of an existing key, in
// each store's wording) wraps core.ErrVersionConflict, an unreachable
// sidecar or store wraps core.ErrUnavailable. Documents and the other
// state (package daprkv) share this one classification.
func Classify(op string, err error) error { return classify(op, err) }
