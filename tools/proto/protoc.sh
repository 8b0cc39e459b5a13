#!/usr/bin/env bash
# Compiles .proto files to Go; run by `go generate` from the package that
# holds them, e.g. `//go:generate bash ../../tools/proto/protoc.sh zds.proto`.
#
# Output must be byte-identical on every machine (CI regenerates and diffs),
# so both compilers are pinned: protoc to Debian's build, protoc-gen-go to the
# version in tools/proto/go.mod, built here rather than taken from PATH.
set -euo pipefail

PROTOC_VERSION="3.21.12" # Debian 12 protobuf-compiler
WKT_DIR=/usr/include     # google/protobuf/*.proto, from libprotobuf-dev

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
src="$root/pkg"

die() { echo "protoc.sh: $*" >&2; exit 1; }

[ $# -gt 0 ] || die "usage: protoc.sh FILE.proto..."
command -v protoc >/dev/null || die "protoc not found: install protobuf-compiler (make deps-debian)"
got=$(protoc --version)
[ "$got" = "libprotoc $PROTOC_VERSION" ] || die "want libprotoc $PROTOC_VERSION, have '$got': generated files would differ"
[ -f "$WKT_DIR/google/protobuf/any.proto" ] || die "well-known types missing: install libprotobuf-dev (make deps-debian)"

# The plugin and the runtime the generated code links against must agree.
want=$(cd "$root" && go list -m -f '{{.Version}}' google.golang.org/protobuf)
have=$(cd "$root/tools/proto" && go list -m -f '{{.Version}}' google.golang.org/protobuf)
[ "$want" = "$have" ] || die "tools/proto pins google.golang.org/protobuf $have, go.mod has $want"

plugin="$root/.cache/proto/protoc-gen-go"
(cd "$root/tools/proto" && go build -trimpath -o "$plugin" google.golang.org/protobuf/cmd/protoc-gen-go)

# Paths relative to pkg/ name the files in the descriptors (e.g.
# zdsapi/zds.proto), the same layout Istio uses.
rel=${PWD#"$src"/}
[ "$rel" != "$PWD" ] || die "run from a package under $src"
files=()
for f in "$@"; do files+=("$rel/$f"); done

cd "$src"
protoc --plugin=protoc-gen-go="$plugin" -I . -I "$WKT_DIR" \
	--go_out=. --go_opt=paths=source_relative "${files[@]}"
