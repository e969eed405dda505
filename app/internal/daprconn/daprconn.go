// Package daprconn authenticates gRPC connections to daprd that the app
// dials itself: the Dapr SDK adds DAPR_API_TOKEN only to connections it
// dials, and WithAuthToken does nothing on one handed to
// NewClientWithConnection.
package daprconn

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// WithToken returns dial options that send token as dapr-api-token on
// every call and stream; none for an empty token.
func WithToken(token string) []grpc.DialOption {
	if token == "" {
		return nil
	}
	return []grpc.DialOption{
		grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, o ...grpc.CallOption) error {
			return invoker(metadata.AppendToOutgoingContext(ctx, "dapr-api-token", token), method, req, reply, cc, o...)
		}),
		grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, o ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(metadata.AppendToOutgoingContext(ctx, "dapr-api-token", token), desc, cc, method, o...)
		}),
	}
}
