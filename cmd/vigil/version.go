package main

import (
	"fmt"
	"io"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
)

// Set at link time by `make build` and packaging/build.sh, both from
// scripts/version.sh (-X main.version=... -X main.commit=...).
var (
	version = "dev"
	commit  = ""
)

// pseudoVersion matches the Go toolchain's pseudo-versions
// (v0.0.0-20260101120000-abcdef123456, v1.2.1-0.2026...): an untagged
// commit, whose distance from the last tag the build info does not carry.
var pseudoVersion = regexp.MustCompile(`\d{14}-[0-9a-f]{12}`)

// buildVersion is the version `vigil version` reports. A binary built
// without the link-time version (plain `go build`, `go install`) takes the
// module version the Go toolchain stamped from a release tag and spells it
// as scripts/version.sh does (v1.3.0-rc1+dirty -> 1.3.0~rc1.dirty), so a
// tagged tree reports the same version by every route; between tags only
// scripts/version.sh knows the commit count, and such a build says "dev"
// (its commit is on the next line).
func buildVersion() string {
	if version != "dev" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		return moduleVersion(bi.Main.Version)
	}
	return version
}

// moduleVersion maps a Go module version to scripts/version.sh's scheme,
// or "dev" when it is not a release tag.
func moduleVersion(v string) string {
	if !strings.HasPrefix(v, "v") || pseudoVersion.MatchString(v) {
		return "dev" // "(devel)", "", or a pseudo-version
	}
	v, dirty := strings.CutSuffix(v[1:], "+dirty")
	v = strings.ReplaceAll(v, "-", "~")
	if dirty {
		v += ".dirty"
	}
	return v
}

func buildCommit() string {
	if commit != "" {
		return commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}

func runVersion(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("version", stderr)
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "vigil version: unexpected argument %q\nusage: vigil version\n", fs.Arg(0))
		return exitUsage
	}
	fmt.Fprintf(stdout, "vigil %s\ncommit %s\n%s %s/%s\n", buildVersion(), buildCommit(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return exitOK
}
