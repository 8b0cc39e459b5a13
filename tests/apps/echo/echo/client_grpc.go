package echo

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

type grpcRequester struct {
	target    string
	authority string
	md        metadata.MD
	message   string
	shared    *grpc.ClientConn // nil unless keep-alive
}

func newGRPCRequester(addr string, cfg ClientConfig) (*grpcRequester, error) {
	g := &grpcRequester{
		// passthrough hands host:port to the dialer as is, resolving it the
		// way the HTTP and TCP clients do instead of through gRPC's own DNS.
		target:  "passthrough:///" + addr,
		md:      metadata.MD{},
		message: cfg.Message,
	}
	for k, vs := range cfg.Headers {
		if strings.EqualFold(k, "Host") {
			g.authority = vs[0]
			continue
		}
		g.md.Append(k, vs...)
	}
	if cfg.KeepAlive {
		conn, err := g.dial()
		if err != nil {
			return nil, err
		}
		g.shared = conn
	}
	return g, nil
}

// dial only sets up the ClientConn; the connection itself is made by the
// first call, under that call's timeout.
func (g *grpcRequester) dial() (*grpc.ClientConn, error) {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if g.authority != "" {
		opts = append(opts, grpc.WithAuthority(g.authority))
	}
	conn, err := grpc.NewClient(g.target, opts...)
	if err != nil {
		return nil, fmt.Errorf("grpc client for %s: %w", g.target, err)
	}
	return conn, nil
}

func (g *grpcRequester) do(ctx context.Context) (Reply, error) {
	conn := g.shared
	if conn == nil {
		var err error
		if conn, err = g.dial(); err != nil {
			return Reply{}, err
		}
		defer conn.Close()
	}
	ctx = metadata.NewOutgoingContext(ctx, g.md)
	var p peer.Peer
	out := new(structpb.Struct)
	if err := conn.Invoke(ctx, GRPCMethod, wrapperspb.String(g.message), out, grpc.Peer(&p)); err != nil {
		return Reply{}, fmt.Errorf("grpc echo: %w", err)
	}
	reply, err := structToReply(out)
	if err != nil {
		return Reply{}, err
	}
	if reply.Message != g.message {
		return Reply{}, fmt.Errorf("echoed message %q, sent %q", reply.Message, g.message)
	}
	if p.LocalAddr != nil {
		reply.LocalAddr = p.LocalAddr.String()
	}
	return reply, nil
}

func (g *grpcRequester) close() {
	if g.shared != nil {
		g.shared.Close()
	}
}
