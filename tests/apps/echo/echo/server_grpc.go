package echo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

type grpcServer struct {
	ln     net.Listener
	srv    *grpc.Server
	health *health.Server
}

func newGRPCServer(ln net.Listener, id Identity, log *slog.Logger) *grpcServer {
	srv := grpc.NewServer()
	srv.RegisterService(echoServiceDesc(), &grpcEcho{id: id, log: log})
	hs := health.NewServer()
	hs.SetServingStatus(GRPCService, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	return &grpcServer{ln: ln, srv: srv, health: hs}
}

func (g *grpcServer) serve() error {
	// Serve returns nil once Stop or GracefulStop was called, and
	// ErrServerStopped if that happened before it started.
	if err := g.srv.Serve(g.ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve grpc: %w", err)
	}
	return nil
}

func (g *grpcServer) shutdown(ctx context.Context) {
	// Report NOT_SERVING first so health-checking clients move away.
	g.health.Shutdown()
	done := make(chan struct{})
	go func() {
		g.srv.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		// Stop also unblocks the GracefulStop above.
		g.srv.Stop()
		<-done
	}
}

type grpcEcho struct {
	id  Identity
	log *slog.Logger
}

func (e *grpcEcho) Echo(ctx context.Context, in *wrapperspb.StringValue) (*structpb.Struct, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	var client string
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		client = p.Addr.String()
	}
	var host string
	if a := md.Get(":authority"); len(a) > 0 {
		host = a[0]
	}
	headers := make(map[string][]string, len(md))
	for k, v := range md {
		headers[k] = v
	}
	reply := Reply{
		Pod:        e.id.Pod,
		Namespace:  e.id.Namespace,
		Version:    e.id.Version,
		Protocol:   ProtocolGRPC,
		Method:     "POST",
		Host:       host,
		Path:       GRPCMethod,
		ClientAddr: client,
		Headers:    headers,
		Message:    in.GetValue(),
	}
	e.log.Info("grpc request", "client", client, "method", GRPCMethod, "authority", host)
	return replyToStruct(reply)
}
