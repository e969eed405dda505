package daprconn

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// HTTPTransaction runs a state transaction (operations in the HTTP API's
// JSON form) through daprd's HTTP API at base (http://host:port), for what
// its gRPC API cannot carry: the outbox's metadata, values stored as JSON.
// Failures come back as the gRPC API's would (Unavailable when daprd or
// the store cannot be reached; the store's message, e.g. "possible etag
// mismatch", otherwise), so callers classify both APIs' errors alike. what
// names the transaction in error messages.
func HTTPTransaction(ctx context.Context, hc *http.Client, base, token, store, what string, ops any) error {
	b, err := json.Marshal(map[string]any{"operations": ops})
	if err != nil {
		return err
	}
	url := strings.TrimSuffix(base, "/") + "/v1.0/state/" + store + "/transaction"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("dapr-api-token", token)
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return status.Error(codes.Unavailable, err.Error())
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 == 2 {
		return nil
	}
	var e struct {
		Code    string `json:"errorCode"`
		Message string `json:"message"`
	}
	_ = json.Unmarshal(msg, &e)
	if e.Message == "" {
		e.Message = strings.TrimSpace(string(msg))
	}
	code := codes.Internal
	if resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusGatewayTimeout {
		code = codes.Unavailable
	}
	return status.Error(code, fmt.Sprintf("%s: %d %s: %s", what, resp.StatusCode, e.Code, e.Message))
}
