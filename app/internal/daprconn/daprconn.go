// Package daprconn authenticates gRPC connections to daprd that the app
// dials itself: the Dapr SDK adds DAPR_API_TOKEN only to connections it
// dials, and WithAuthToken does nothing on one handed to
// NewClientWithConnection.
package daprconn

import (
	"context"
	"net"
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// Dial connects, lazily, to the gRPC API of the sidecar on
// 127.0.0.1:grpcPort, in plain text (loopback), sending token as
// dapr-api-token (WithToken), with opts added.
func Dial(grpcPort int, token string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	return grpc.NewClient(net.JoinHostPort("127.0.0.1", strconv.Itoa(grpcPort)), append(opts, WithToken(token)...)...)
}

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
