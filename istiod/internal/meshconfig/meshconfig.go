// Package meshconfig reads the mesh-wide settings from the `istio`
// ConfigMap in istiod's namespace, key `mesh`: a YAML MeshConfig, as in
// Istio (istio.io/api mesh/v1alpha1). istiod uses two of its fields:
// trustDomain and rootNamespace.
//
// A ConfigMap that does not parse, or names a field MeshConfig does not
// have, is reported (a log line and a Warning event on the ConfigMap, both
// naming the problem) and the last good settings stay in force; a missing
// ConfigMap or key means the defaults.
package meshconfig

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/yaml"
)

// ConfigMapName and Key locate the mesh settings, as in Istio.
const (
	ConfigMapName = "istio"
	Key           = "mesh"
)

// Config is the part of MeshConfig istiod acts on.
type Config struct {
	TrustDomain   string
	RootNamespace string
}

// Parse reads a `mesh` value. Empty fields take the values of defaults.
func Parse(data string, defaults Config) (Config, error) {
	out := defaults
	if strings.TrimSpace(data) == "" {
		return out, nil
	}
	js, err := yaml.YAMLToJSON([]byte(data))
	if err != nil {
		return out, fmt.Errorf("key %s: not YAML: %w", Key, err)
	}
	var mc meshv1alpha1.MeshConfig
	if err := protojson.Unmarshal(js, &mc); err != nil {
		return out, fmt.Errorf("key %s: %w", Key, err)
	}
	if v := mc.GetTrustDomain(); v != "" {
		out.TrustDomain = v
	}
	if v := mc.GetRootNamespace(); v != "" {
		out.RootNamespace = v
	}
	return out, nil
}

// Watcher follows the ConfigMap and calls its listener with every new
// good Config.
type Watcher struct {
	client    kubernetes.Interface
	namespace string
	defaults  Config
	log       *slog.Logger

	mu       sync.Mutex
	current  Config
	listener func(Config)
	lastErr  string
	// synced is set once the first read is done; changes before it are
	// the initial state, not news for the listener.
	synced bool
}

// NewWatcher returns a watcher of the ConfigMap in namespace. Until the
// ConfigMap is read, Current returns defaults. A nil log discards.
func NewWatcher(client kubernetes.Interface, namespace string, defaults Config, log *slog.Logger) *Watcher {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Watcher{client: client, namespace: namespace, defaults: defaults, current: defaults, log: log}
}

// Current returns the settings in force.
func (w *Watcher) Current() Config {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.current
}

// OnChange sets the function called, from the watcher's goroutine, with
// each new Config after the first read. A caller that sets it after Start
// should compare Current with what it started from, since a change in
// between is not replayed.
func (w *Watcher) OnChange(f func(Config)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.listener = f
}

// Start watches until ctx is done and returns once the ConfigMap has been
// read (or found missing), so Current is the cluster's setting.
func (w *Watcher) Start(ctx context.Context) error {
	f := informers.NewSharedInformerFactoryWithOptions(w.client, 0, informers.WithNamespace(w.namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", ConfigMapName).String()
		}))
	inf := f.Core().V1().ConfigMaps().Informer()
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { w.update(ctx, obj) },
		UpdateFunc: func(_, obj any) { w.update(ctx, obj) },
		DeleteFunc: func(any) {
			w.log.Warn("mesh config removed; using the defaults", "configmap", w.namespace+"/"+ConfigMapName)
			w.set(w.defaults)
		},
	})
	if err != nil {
		return err
	}
	f.Start(ctx.Done())
	go func() { <-ctx.Done(); f.Shutdown() }()
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced, reg.HasSynced) {
		return errors.New("meshconfig: ConfigMap informer did not sync")
	}
	w.mu.Lock()
	w.synced = true
	w.mu.Unlock()
	c := w.Current()
	w.log.Info("mesh config", "configmap", w.namespace+"/"+ConfigMapName, "trust_domain", c.TrustDomain, "root_namespace", c.RootNamespace)
	return nil
}

func (w *Watcher) update(ctx context.Context, obj any) {
	cm, ok := obj.(*corev1.ConfigMap)
	if !ok {
		return
	}
	c, err := Parse(cm.Data[Key], w.defaults)
	if err != nil {
		w.reject(ctx, cm, err)
		return
	}
	w.mu.Lock()
	w.lastErr = ""
	w.mu.Unlock()
	w.set(c)
}

func (w *Watcher) set(c Config) {
	w.mu.Lock()
	changed, notify, listener := c != w.current, w.synced, w.listener
	w.current = c
	w.mu.Unlock()
	if changed && notify {
		w.log.Info("mesh config changed", "trust_domain", c.TrustDomain, "root_namespace", c.RootNamespace)
		if listener != nil {
			listener(c)
		}
	}
}

// reject reports a ConfigMap that does not parse, once per distinct error,
// and keeps the settings in force.
func (w *Watcher) reject(ctx context.Context, cm *corev1.ConfigMap, err error) {
	w.mu.Lock()
	repeat := w.lastErr == err.Error()
	w.lastErr = err.Error()
	keep := w.current
	w.mu.Unlock()
	if repeat {
		return
	}
	w.log.Error("mesh config rejected; keeping the settings in force", "configmap", cm.Namespace+"/"+cm.Name,
		"error", err, "trust_domain", keep.TrustDomain, "root_namespace", keep.RootNamespace)
	now := metav1.NewTime(time.Now())
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{GenerateName: cm.Name + ".", Namespace: cm.Namespace},
		InvolvedObject: corev1.ObjectReference{
			Kind: "ConfigMap", APIVersion: "v1", Namespace: cm.Namespace, Name: cm.Name,
			UID: cm.UID, ResourceVersion: cm.ResourceVersion,
		},
		Type:           corev1.EventTypeWarning,
		Reason:         "InvalidMeshConfig",
		Message:        fmt.Sprintf("%v; the previous mesh config stays in force", err),
		Source:         corev1.EventSource{Component: "istiod"},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := w.client.CoreV1().Events(cm.Namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		w.log.Warn("could not record the mesh config event", "error", err)
	}
}
