package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/types/create"

	"github.com/ambient-mesh/mesh/cni/internal/agentapi"
)

// delTimeout bounds DEL's best-effort call: a runtime tearing down a sandbox
// must not wait on an agent that is restarting.
const delTimeout = 2 * time.Second

// statusTimeout bounds STATUS's question to the agent.
const statusTimeout = 5 * time.Second

// Plugin runs the CNI commands. Results go to Stdout, logs to Stderr.
type Plugin struct {
	Stdout io.Writer
	Stderr io.Writer
}

// Funcs returns the commands in the shape skel dispatches.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.Add, Check: p.Check, Del: p.Del, Status: p.Status}
}

func (p *Plugin) setup(args *skel.CmdArgs) (*Config, *slog.Logger, error) {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return nil, nil, types.NewError(types.ErrDecodingFailure, err.Error(), "")
	}
	log := slog.New(slog.NewTextHandler(p.Stderr, &slog.HandlerOptions{Level: conf.Level})).
		With("plugin", Name, "container", args.ContainerID)
	return conf, log, nil
}

// pod returns the sandbox's pod, and whether the agent should hear of it.
func pod(args *skel.CmdArgs, conf *Config, log *slog.Logger) (PodArgs, bool, error) {
	pa, err := ParseArgs(args.Args)
	if err != nil {
		return pa, false, types.NewError(types.ErrInvalidEnvironmentVariables, err.Error(), "")
	}
	switch {
	case !conf.Enabled():
		log.Debug("ambient disabled in config, passing through")
		return pa, false, nil
	case pa.Name == "" || pa.Namespace == "":
		log.Debug("not a Kubernetes pod, passing through")
		return pa, false, nil
	case conf.Exclude[pa.Namespace]:
		log.Debug("namespace excluded, passing through", "pod", pa.Namespace+"/"+pa.Name)
		return pa, false, nil
	}
	return pa, true, nil
}

// Add tells the agent about the new sandbox and waits for it, then passes
// the chain's result on.
func (p *Plugin) Add(args *skel.CmdArgs) error {
	conf, log, err := p.setup(args)
	if err != nil {
		return err
	}
	pa, ask, err := pod(args, conf, log)
	if err != nil {
		return err
	}
	if ask {
		req := agentapi.PodAdded{
			Netns:        args.Netns,
			PodName:      pa.Name,
			PodNamespace: pa.Namespace,
			PodUID:       pa.UID,
			ContainerID:  args.ContainerID,
			IfName:       args.IfName,
		}
		if req.IPs, err = addresses(conf.PrevResult); err != nil {
			return types.NewError(types.ErrDecodingFailure, err.Error(), "")
		}
		ctx, cancel := context.WithTimeout(context.Background(), conf.Timeout)
		res, err := agentapi.NewClient(conf.Socket).PodAdded(ctx, req)
		cancel()
		if err != nil {
			msg := fmt.Sprintf("%s: pod %s/%s: %v", Name, pa.Namespace, pa.Name, err)
			log.Error("add failed", "pod", pa.Namespace+"/"+pa.Name, "err", err)
			code := types.ErrInternal
			if errors.Is(err, agentapi.ErrUnreachable) || errors.Is(err, context.DeadlineExceeded) {
				code = types.ErrTryAgainLater
			}
			return types.NewError(code, msg, "")
		}
		log.Info("pod added", "pod", pa.Namespace+"/"+pa.Name, "enrolled", res.Enrolled, "reason", res.Reason)
	}
	return p.passThrough(conf)
}

// passThrough prints prevResult in the config's version, or an empty
// result when this plugin has no predecessor.
func (p *Plugin) passThrough(conf *Config) error {
	if conf.PrevResult == nil {
		// Built directly in the config's version: an empty result does not
		// convert down to 0.1.0/0.2.0, which require an IPv4 address.
		v, _ := json.Marshal(conf.CNIVersion)
		empty, err := create.Create(conf.CNIVersion, []byte(`{"cniVersion":`+string(v)+`}`))
		if err != nil {
			return types.NewError(types.ErrIncompatibleCNIVersion, fmt.Sprintf("%s: empty %s result: %v", Name, conf.CNIVersion, err), "")
		}
		return empty.PrintTo(p.Stdout)
	}
	out, err := conf.PrevResult.GetAsVersion(conf.CNIVersion)
	if err != nil {
		return types.NewError(types.ErrIncompatibleCNIVersion, fmt.Sprintf("%s: convert result to %s: %v", Name, conf.CNIVersion, err), "")
	}
	return out.PrintTo(p.Stdout)
}

// addresses lists the pod's addresses from the chain's result.
func addresses(prev types.Result) ([]agentapi.IPConfig, error) {
	if prev == nil {
		return nil, nil
	}
	res, err := current.NewResultFromResult(prev)
	if err != nil {
		return nil, fmt.Errorf("%s: read prevResult addresses: %w", Name, err)
	}
	var ips []agentapi.IPConfig
	for _, ip := range res.IPs {
		c := agentapi.IPConfig{Address: ip.Address.String(), Interface: ip.Interface}
		if ip.Gateway != nil {
			c.Gateway = ip.Gateway.String()
		}
		ips = append(ips, c)
	}
	return ips, nil
}

// Check validates the config and that the chain handed us a result. The
// agent owns the pod's redirection after ADD and repairs it itself, so
// there is nothing of ours in the sandbox to check.
func (p *Plugin) Check(args *skel.CmdArgs) error {
	conf, log, err := p.setup(args)
	if err != nil {
		return err
	}
	if _, _, err := pod(args, conf, log); err != nil {
		return err
	}
	if conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("%s: CHECK: %v", Name, errNoPrevResult), "")
	}
	return nil
}

// Del tells the agent, best effort, and always succeeds once the config
// parses: a failing DEL makes the kubelet retry it forever.
func (p *Plugin) Del(args *skel.CmdArgs) error {
	conf, log, err := p.setup(args)
	if err != nil {
		return err
	}
	pa, ask, err := pod(args, conf, log)
	if err != nil {
		log.Warn("ignoring bad CNI_ARGS on DEL", "err", err)
		return nil
	}
	if !ask {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), delTimeout)
	defer cancel()
	err = agentapi.NewClient(conf.Socket).PodDeleted(ctx, agentapi.PodDeleted{
		Netns:        args.Netns,
		PodName:      pa.Name,
		PodNamespace: pa.Namespace,
		PodUID:       pa.UID,
		ContainerID:  args.ContainerID,
	})
	if err != nil {
		log.Warn("could not tell the node agent; it reconciles on its own", "pod", pa.Namespace+"/"+pa.Name, "err", err)
	}
	return nil
}

// Status reports whether the node agent can take pods: new sandboxes
// would fail ADD without it.
func (p *Plugin) Status(args *skel.CmdArgs) error {
	conf, _, err := p.setup(args)
	if err != nil {
		return err
	}
	if !conf.Enabled() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), statusTimeout)
	defer cancel()
	if err := agentapi.NewClient(conf.Socket).Status(ctx); err != nil {
		return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("%s: %v", Name, err), "")
	}
	return nil
}
