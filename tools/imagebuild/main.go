// Command imagebuild writes a single-layer OCI image of static binaries to
// an image archive that containerd can import, without a container engine.
//
//	imagebuild -o echo.tar -ref localhost/mesh/echo:dev -add bin/echo:/usr/local/bin/echo -entrypoint /usr/local/bin/echo
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var (
		out, ref, entrypoint, workdir, user string
		adds, args, envs                    listFlag
	)
	flag.StringVar(&out, "o", "", "archive to write")
	flag.StringVar(&ref, "ref", "", "image reference, e.g. localhost/mesh/echo:dev")
	flag.Var(&adds, "add", "SRC:DEST file to add (repeatable)")
	flag.StringVar(&entrypoint, "entrypoint", "", "entrypoint, space separated")
	flag.Var(&args, "arg", "default argument (repeatable)")
	flag.Var(&envs, "env", "KEY=VALUE environment (repeatable)")
	flag.StringVar(&workdir, "workdir", "/", "working directory")
	flag.StringVar(&user, "user", "", "user to run as, e.g. 65532")
	flag.Parse()
	if out == "" || ref == "" || len(adds) == 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := build(out, ref, adds, strings.Fields(entrypoint), args, envs, workdir, user); err != nil {
		fmt.Fprintf(os.Stderr, "imagebuild %s: %v\n", ref, err)
		os.Exit(1)
	}
}

func build(out, ref string, adds, entrypoint, args, envs []string, workdir, user string) error {
	tag, err := name.NewTag(ref, name.WeakValidation)
	if err != nil {
		return fmt.Errorf("parse ref: %w", err)
	}
	layerTar, err := layer(adds)
	if err != nil {
		return err
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config.Entrypoint = entrypoint
	cf.Config.Cmd = args
	cf.Config.Env = append([]string{"PATH=/usr/local/bin:/usr/bin:/bin"}, envs...)
	cf.Config.WorkingDir = workdir
	cf.Config.User = user
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(path.Dir(out), 0o755); err != nil {
		return err
	}
	tmp := out + ".tmp"
	if err := tarball.WriteToFile(tmp, tag, img); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}

// layer builds the one filesystem layer: the files, their parent
// directories, and a world-writable /tmp. Timestamps are fixed so that the
// same binaries give the same image.
func layer(adds []string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	dirs := map[string]bool{"tmp": true}
	type file struct{ src, dest string }
	var files []file
	for _, a := range adds {
		src, dest, ok := strings.Cut(a, ":")
		if !ok || !strings.HasPrefix(dest, "/") {
			return nil, fmt.Errorf("-add %q: want SRC:/DEST", a)
		}
		dest = strings.TrimPrefix(path.Clean(dest), "/")
		files = append(files, file{src, dest})
		for d := path.Dir(dest); d != "." && d != "/"; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	sorted := make([]string, 0, len(dirs))
	for d := range dirs {
		sorted = append(sorted, d)
	}
	sort.Strings(sorted)
	for _, d := range sorted {
		mode := int64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: mode, ModTime: epoch}); err != nil {
			return nil, err
		}
	}
	for _, f := range files {
		data, err := os.ReadFile(f.src)
		if err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.dest, Mode: 0o755, Size: int64(len(data)), ModTime: epoch}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
