package ads

import (
	"slices"
	"sync"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

type recorder struct {
	mu    sync.Mutex
	calls [][]string
}

func (r *recorder) changed(typeURL string, names []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, append([]string{typeURL}, slices.Sorted(slices.Values(names))...))
}

func TestCacheNotifiesOnlyRealChanges(t *testing.T) {
	c := NewCache()
	rec := &recorder{}
	c.watch(rec)

	c.Set(typeAddr, "a", body(t, "a"))
	v1, _, _ := c.Get(typeAddr, "a")
	c.Set(typeAddr, "a", body(t, "a")) // same bytes
	v2, _, _ := c.Get(typeAddr, "a")
	if v1 != v2 {
		t.Fatalf("same bytes, versions %q and %q", v1, v2)
	}
	c.Delete(typeAddr, "missing")
	c.Apply(typeAddr, map[string]*anypb.Any{"a": body(t, "a2"), "b": body(t, "b"), "nil": nil}, []string{"zz"})
	c.Apply(typeAddr, map[string]*anypb.Any{"b": nil}, nil)
	c.unwatch(rec)
	c.Set(typeAddr, "c", body(t, "c"))

	want := [][]string{{typeAddr, "a"}, {typeAddr, "a", "b"}, {typeAddr, "b"}}
	if !slices.EqualFunc(rec.calls, want, slices.Equal) {
		t.Fatalf("notifications = %v, want %v", rec.calls, want)
	}
	if names := c.Names(typeAddr); !slices.Equal(names, []string{"a", "c"}) {
		t.Fatalf("names = %v", names)
	}
}

func TestMarshalAnyIsDeterministic(t *testing.T) {
	m := map[string]any{}
	for _, k := range []string{"k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8"} {
		m[k] = k
	}
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	first, err := MarshalAny(s)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		a, err := MarshalAny(s)
		if err != nil {
			t.Fatal(err)
		}
		if Version(a) != Version(first) {
			t.Fatal("equal messages got different versions")
		}
	}
}
