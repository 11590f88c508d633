package main

import "testing"

// TestModuleVersion: `go build`/`go install` binaries spell a release tag as
// scripts/version.sh does (packaging's TestVersionScript has its side).
func TestModuleVersion(t *testing.T) {
	for in, want := range map[string]string{
		"v1.2.0":                               "1.2.0",
		"v1.2.0+dirty":                         "1.2.0.dirty",
		"v1.3.0-rc1":                           "1.3.0~rc1",
		"v1.3.0-rc1+dirty":                     "1.3.0~rc1.dirty",
		"(devel)":                              "dev",
		"":                                     "dev",
		"v0.0.0-20260101120000-abcdef123456":   "dev",
		"v1.2.1-0.20260101120000-abcdef123456": "dev",
		"v1.2.1-0.20260101120000-abcdef123456+dirty": "dev",
		"v1.3.0-rc1.0.20260101120000-abcdef123456":   "dev",
	} {
		if got := moduleVersion(in); got != want {
			t.Errorf("moduleVersion(%q) = %q, want %q", in, got, want)
		}
	}
}
