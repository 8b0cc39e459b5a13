package echo

import (
	"context"
	"encoding/json"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The gRPC service is described by hand because no protoc is available; it
// uses only well-known types, so any gRPC client can call it:
//
//	service echo.Echo { rpc Echo(google.protobuf.StringValue) returns (google.protobuf.Struct); }
const (
	GRPCService = "echo.Echo"
	GRPCMethod  = "/" + GRPCService + "/Echo"
)

// echoService is the server side of echo.Echo; grpc.RegisterService checks
// implementations against it.
type echoService interface {
	Echo(ctx context.Context, in *wrapperspb.StringValue) (*structpb.Struct, error)
}

func echoServiceDesc() *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: GRPCService,
		HandlerType: (*echoService)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Echo",
			Handler:    echoMethodHandler,
		}},
		Metadata: "echo.proto",
	}
}

// echoMethodHandler decodes the request and runs it through any interceptor,
// as generated code would.
func echoMethodHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	in := new(wrapperspb.StringValue)
	if err := dec(in); err != nil {
		return nil, err
	}
	svc := srv.(echoService)
	if interceptor == nil {
		return svc.Echo(ctx, in)
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: GRPCMethod}
	return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
		return svc.Echo(ctx, req.(*wrapperspb.StringValue))
	})
}

// replyToStruct and structToReply go through JSON because protojson renders
// a Struct as the plain JSON object, so the gRPC reply has exactly the HTTP
// reply's field names.
func replyToStruct(r Reply) (*structpb.Struct, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode reply: %w", err)
	}
	s := new(structpb.Struct)
	if err := protojson.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("convert reply to struct: %w", err)
	}
	return s, nil
}

func structToReply(s *structpb.Struct) (Reply, error) {
	b, err := protojson.Marshal(s)
	if err != nil {
		return Reply{}, fmt.Errorf("convert struct to json: %w", err)
	}
	var r Reply
	if err := json.Unmarshal(b, &r); err != nil {
		return Reply{}, fmt.Errorf("decode reply: %w", err)
	}
	return r, nil
}
