package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vigil-project/vigil/config"
)

func writeConfig(t *testing.T, body string) (path, key string) {
	t.Helper()
	dir := t.TempDir()
	key = filepath.Join(dir, "cluster.key")
	if err := config.WriteKeyFile(key); err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(dir, "vigil.yaml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(body, "$KEY", key)), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, key
}

func TestCheckGood(t *testing.T) {
	path, _ := writeConfig(t, `cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
`)
	for _, flagName := range []string{"-c", "--config", "-config"} {
		var out, errb bytes.Buffer
		code := dispatch([]string{"check", flagName, path}, &out, &errb)
		if code != exitOK || out.String() != path+": ok\n" || errb.Len() != 0 {
			t.Errorf("check %s: exit %d, stdout %q, stderr %q", flagName, code, out.String(), errb.String())
		}
	}
}

func TestCheckBad(t *testing.T) {
	path, _ := writeConfig(t, `cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
  timing: {lease: 1}
vips:
  - {address: 192.0.2.100/24}
`)
	var out, errb bytes.Buffer
	code := dispatch([]string{"check", "-c", path}, &out, &errb)
	want := path + `:6:19: cluster.timing.lease: "1" has no unit: write a Go duration like 150ms or 2s` + "\n" +
		path + ":8:5: vips[0].interface: required: the interface that carries the address, like eth0\n"
	if code != exitUsage || errb.String() != want || out.Len() != 0 {
		t.Errorf("exit %d\nstdout %q\nstderr:\n%s\nwant:\n%s", code, out.String(), errb.String(), want)
	}
}

func TestCheckMissingFile(t *testing.T) {
	var out, errb bytes.Buffer
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	code := dispatch([]string{"check", "-c", missing}, &out, &errb)
	if code != exitUsage || !strings.Contains(errb.String(), missing) || !strings.Contains(errb.String(), "no such file") {
		t.Errorf("exit %d, stderr %q", code, errb.String())
	}
}

func TestCheckUsage(t *testing.T) {
	for _, args := range [][]string{{"check", "-x"}, {"check", "-c"}, {"check", "extra"}} {
		var out, errb bytes.Buffer
		code := dispatch(args, &out, &errb)
		if code != exitUsage || !strings.Contains(errb.String(), "usage: vigil check") || out.Len() != 0 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out.String(), errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := dispatch([]string{"check", "-h"}, &out, &errb); code != exitOK || !strings.Contains(out.String(), "-config FILE") {
		t.Errorf("-h: exit %d, stdout %q", code, out.String())
	}
}

func TestKeygen(t *testing.T) {
	// The parent directory does not exist yet: keygen creates it 0700.
	dir := filepath.Join(t.TempDir(), "etc", "vigil")
	path := filepath.Join(dir, "cluster.key")
	var out, errb bytes.Buffer
	if code := dispatch([]string{"keygen", path}, &out, &errb); code != exitOK || out.String() != path+"\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("parent dir: %v %v, want 0700", st.Mode(), err)
	}
	key, err := config.ReadKeyFile(path)
	if err != nil || len(key) != config.KeySize {
		t.Fatalf("ReadKeyFile: %x %v", key, err)
	}

	// A second run refuses and leaves the key alone.
	out.Reset()
	errb.Reset()
	code := dispatch([]string{"keygen", path}, &out, &errb)
	if code != exitFailure || !strings.Contains(errb.String(), "already exists; remove it first") {
		t.Errorf("second keygen: exit %d, stderr %q", code, errb.String())
	}
	again, err := config.ReadKeyFile(path)
	if err != nil || !bytes.Equal(again, key) {
		t.Errorf("the key changed: %x -> %x (%v)", key, again, err)
	}

	if code := dispatch([]string{"keygen", "a", "b"}, &out, &errb); code != exitUsage {
		t.Errorf("two arguments: exit %d, want %d", code, exitUsage)
	}
}

// A floating IP on an interface this host lacks is a warning, not an
// error: the file is valid, and the interface may come later.
func TestCheckWarnsOfAMissingInterface(t *testing.T) {
	path, _ := writeConfig(t, `cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
services:
  - name: one
    vips: [{address: 192.0.2.100/24, interface: lo}]
  - name: two
    vips: [{address: 192.0.2.101/24, interface: lo}, {address: 192.0.2.102/24, interface: vgnosuch0}]
`)
	var out, errb bytes.Buffer
	code := dispatch([]string{"check", "-c", path}, &out, &errb)
	want := path + `: warning: services[1].vips[1].interface: "vgnosuch0" is not an interface of this host: a node holds the service without 192.0.2.102/24, and unhealthy, until it appears` + "\n"
	if code != exitOK || out.String() != path+": ok\n" || errb.String() != want {
		t.Errorf("exit %d, stdout %q, stderr %q; want 0, ok and\n%s", code, out.String(), errb.String(), want)
	}
}

// An IPv6 floating IP on an interface whose IPv6 is off: a warning naming
// the sysctl (the sysctl tree is a directory here: the host's own must not
// be changed by a test).
func TestCheckWarnsOfIPv6Disabled(t *testing.T) {
	path, _ := writeConfig(t, `cluster:
  name: edge
  node: a
  key_file: $KEY
  nodes: [{id: a, address: 192.0.2.11:7400}]
vips:
  - {address: 192.0.2.100/24, interface: lo}
  - {address: "2001:db8::100/64", interface: lo}
`)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	sys := t.TempDir()
	conf := filepath.Join(sys, "net/ipv6/conf/lo")
	if err := os.MkdirAll(conf, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(conf, "disable_ipv6"), []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	want := []string{`vips[1].interface: "lo" cannot hold 2001:db8::100/64: IPv6 disabled (net.ipv6.conf.lo.disable_ipv6 = 1); the node is unhealthy until IPv6 is enabled there`}
	if got := interfaceWarnings(cfg, sys); !slices.Equal(got, want) {
		t.Errorf("warnings %q, want %q", got, want)
	}
	if err := os.WriteFile(filepath.Join(conf, "disable_ipv6"), []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := interfaceWarnings(cfg, sys); len(got) != 0 {
		t.Errorf("warnings %q with IPv6 on", got)
	}
}
