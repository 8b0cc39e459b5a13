package main

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func TestBuildWritesAnImportableImage(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "app")
	if err := os.WriteFile(bin, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "app.tar")
	ref := "localhost/mesh/app:dev"
	if err := build(out, ref, []string{bin + ":/usr/local/bin/app"}, []string{"/usr/local/bin/app"}, []string{"serve"}, []string{"A=b"}, "/", "65532"); err != nil {
		t.Fatal(err)
	}
	tag, _ := name.NewTag(ref)
	img, err := tarball.ImageFromPath(out, &tag)
	if err != nil {
		t.Fatalf("archive does not hold %s: %v", ref, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s", cf.OS, cf.Architecture)
	}
	if len(cf.Config.Entrypoint) != 1 || cf.Config.Entrypoint[0] != "/usr/local/bin/app" || len(cf.Config.Cmd) != 1 || cf.Config.Cmd[0] != "serve" {
		t.Errorf("entrypoint %v cmd %v", cf.Config.Entrypoint, cf.Config.Cmd)
	}
	if cf.Config.User != "65532" {
		t.Errorf("user %q", cf.Config.User)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = h
	}
	if h := files["usr/local/bin/app"]; h == nil || h.Mode&0o111 == 0 {
		t.Errorf("binary missing or not executable: %+v", h)
	}
	if files["usr/local/bin/"] == nil || files["tmp/"] == nil || files["tmp/"].Mode != 0o1777 {
		t.Errorf("parent directories or a sticky /tmp missing: %v", files)
	}
}

func TestBuildIsReproducible(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "app")
	if err := os.WriteFile(bin, []byte("binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	digest := func(out string) string {
		if err := build(out, "localhost/mesh/app:dev", []string{bin + ":/app"}, []string{"/app"}, nil, nil, "/", ""); err != nil {
			t.Fatal(err)
		}
		img, err := tarball.ImageFromPath(out, nil)
		if err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d.String()
	}
	if a, b := digest(filepath.Join(dir, "a.tar")), digest(filepath.Join(dir, "b.tar")); a != b {
		t.Errorf("same inputs, different images: %s vs %s", a, b)
	}
}

func TestBuildRejectsARelativeDestination(t *testing.T) {
	if err := build(filepath.Join(t.TempDir(), "x.tar"), "localhost/x:dev", []string{"a:relative"}, nil, nil, nil, "/", ""); err == nil {
		t.Fatal("accepted -add without an absolute destination")
	}
}
