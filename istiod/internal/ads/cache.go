package ads

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// entry is one stored resource and the version derived from its bytes.
type entry struct {
	version string
	body    *anypb.Any
}

// watcher is told which names of a type changed. It must not block and
// must not call back into the Cache's write methods.
type watcher interface {
	changed(typeURL string, names []string)
}

// Cache holds the resources istiod serves, per type URL and name. It is
// safe for concurrent use. Bodies handed to it must not be modified
// afterwards: connections read them while encoding responses.
type Cache struct {
	mu       sync.RWMutex
	types    map[string]map[string]entry
	watchers map[watcher]struct{}
}

// NewCache returns an empty cache.
func NewCache() *Cache {
	return &Cache{types: map[string]map[string]entry{}, watchers: map[watcher]struct{}{}}
}

// MarshalAny wraps m in an Any with deterministic encoding, so that equal
// messages give equal bytes and therefore equal versions. anypb.New does not
// promise that (map order), which would make every rebuild look like a change.
func MarshalAny(m proto.Message) (*anypb.Any, error) {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, fmt.Errorf("marshal %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	return a, nil
}

// Version is the version a body gets: a hash of its type URL and bytes, so
// it changes exactly when the bytes do, and stays the same across istiod
// restarts, which lets a reconnecting client skip what it already has.
func Version(body *anypb.Any) string {
	h := sha256.New()
	h.Write([]byte(body.GetTypeUrl()))
	h.Write([]byte{0})
	h.Write(body.GetValue())
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// Set stores or replaces one resource.
func (c *Cache) Set(typeURL, name string, body *anypb.Any) {
	c.Apply(typeURL, map[string]*anypb.Any{name: body}, nil)
}

// Delete removes one resource; removing a missing one is a no-op.
func (c *Cache) Delete(typeURL, name string) {
	c.Apply(typeURL, nil, []string{name})
}

// Apply stores updated and removes removed in one step, so connections see
// the batch together. A nil body counts as a removal. Only names whose
// version actually changed, or that existed and were removed, are pushed.
func (c *Cache) Apply(typeURL string, updated map[string]*anypb.Any, removed []string) {
	var changed []string
	c.mu.Lock()
	res := c.types[typeURL]
	if res == nil {
		res = map[string]entry{}
		c.types[typeURL] = res
	}
	remove := func(name string) {
		if _, ok := res[name]; ok {
			delete(res, name)
			changed = append(changed, name)
		}
	}
	for name, body := range updated {
		if body == nil {
			remove(name)
			continue
		}
		v := Version(body)
		if old, ok := res[name]; ok && old.version == v {
			continue
		}
		res[name] = entry{version: v, body: body}
		changed = append(changed, name)
	}
	for _, name := range removed {
		remove(name)
	}
	ws := make([]watcher, 0, len(c.watchers))
	for w := range c.watchers {
		ws = append(ws, w)
	}
	c.mu.Unlock()

	// Watchers are called without the lock: a connection reads the cache
	// while holding its own lock, so the cache must never take a
	// connection's lock while holding its own. Order between concurrent
	// batches does not matter, since connections read the current state.
	if len(changed) == 0 {
		return
	}
	for _, w := range ws {
		w.changed(typeURL, changed)
	}
}

// Get returns the version and body stored under typeURL and name.
func (c *Cache) Get(typeURL, name string) (version string, body *anypb.Any, ok bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e, ok := c.types[typeURL][name]
	return e.version, e.body, ok
}

// Names returns the sorted names stored under typeURL.
func (c *Cache) Names(typeURL string) []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	names := make([]string, 0, len(c.types[typeURL]))
	for n := range c.types[typeURL] {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// view runs fn with the resources of typeURL under the read lock.
func (c *Cache) view(typeURL string, fn func(map[string]entry)) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	fn(c.types[typeURL])
}

func (c *Cache) watch(w watcher) {
	c.mu.Lock()
	c.watchers[w] = struct{}{}
	c.mu.Unlock()
}

func (c *Cache) unwatch(w watcher) {
	c.mu.Lock()
	delete(c.watchers, w)
	c.mu.Unlock()
}
