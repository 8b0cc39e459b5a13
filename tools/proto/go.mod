// Builds protoc-gen-go for `make generate`, kept apart from the product's
// module. Pin the same google.golang.org/protobuf as the root go.mod: the
// generated code and the runtime it calls must agree.
module github.com/ambient-mesh/mesh/tools/proto

go 1.26.0

tool google.golang.org/protobuf/cmd/protoc-gen-go

require google.golang.org/protobuf v1.36.12 // indirect
