// Package wiretest checks protobuf messages at the wire level, so tests can
// pin the field numbers our APIs share with Istio's independently of the
// generated code.
package wiretest

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Marshal encodes m deterministically.
func Marshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatalf("marshal %T: %v", m, err)
	}
	return b
}

// Field is one top-level field as found on the wire.
type Field struct {
	Num  protowire.Number
	Type protowire.Type
	// Value: the varint, or the fixed-width value, or for BytesType the bytes.
	Varint uint64
	Bytes  []byte
}

// Fields splits b into its top-level fields, in wire order.
func Fields(t testing.TB, b []byte) []Field {
	t.Helper()
	var out []Field
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatalf("bad tag: %v", protowire.ParseError(n))
		}
		b = b[n:]
		f := Field{Num: num, Type: typ}
		switch typ {
		case protowire.VarintType:
			f.Varint, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var v uint32
			v, n = protowire.ConsumeFixed32(b)
			f.Varint = uint64(v)
		case protowire.Fixed64Type:
			f.Varint, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			f.Bytes, n = protowire.ConsumeBytes(b)
		default:
			t.Fatalf("field %d: unexpected wire type %d", num, typ)
		}
		if n < 0 {
			t.Fatalf("field %d: %v", num, protowire.ParseError(n))
		}
		b = b[n:]
		out = append(out, f)
	}
	return out
}

// Bytes returns the value of the only occurrence of length-delimited field
// num in b (a string, bytes or nested message).
func Bytes(t testing.TB, b []byte, num protowire.Number) []byte {
	t.Helper()
	return only(t, b, num, protowire.BytesType).Bytes
}

// Varint returns the value of the only occurrence of varint field num in b.
func Varint(t testing.TB, b []byte, num protowire.Number) uint64 {
	t.Helper()
	return only(t, b, num, protowire.VarintType).Varint
}

func only(t testing.TB, b []byte, num protowire.Number, typ protowire.Type) Field {
	t.Helper()
	var found []Field
	for _, f := range Fields(t, b) {
		if f.Num == num {
			found = append(found, f)
		}
	}
	if len(found) != 1 {
		t.Fatalf("field %d: found %d times, want once", num, len(found))
	}
	if found[0].Type != typ {
		t.Fatalf("field %d: wire type %d, want %d", num, found[0].Type, typ)
	}
	return found[0]
}

// Numbers checks that md has exactly the fields in want, with those numbers.
func Numbers(t testing.TB, md protoreflect.MessageDescriptor, want map[string]protowire.Number) {
	t.Helper()
	fields := md.Fields()
	for name, num := range want {
		fd := fields.ByName(protoreflect.Name(name))
		if fd == nil {
			t.Errorf("%s: no field %s", md.FullName(), name)
			continue
		}
		if fd.Number() != num {
			t.Errorf("%s.%s is field %d, want %d", md.FullName(), name, fd.Number(), num)
		}
	}
	for i := range fields.Len() {
		if fd := fields.Get(i); want[string(fd.Name())] == 0 {
			t.Errorf("%s.%s (field %d) is not in the expected schema", md.FullName(), fd.Name(), fd.Number())
		}
	}
}
