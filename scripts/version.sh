#!/bin/sh
# Prints the version of the tree it is run in, for every build route: the
# Makefile's `make build` and packaging/build.sh (deb, rpm) both link it into
# the binary (-X main.version=), so `vigil version` and the package version
# agree. Release procedure: packaging/README.md ("Version and releases").
#
# Debian and rpm versions both accept [0-9][A-Za-z0-9.+~]*:
#   tag v1.2.0                    1.2.0
#   3 commits after v1.2.0        1.2.0+3.gSHA
#   pre-release tag v1.3.0-rc1    1.3.0~rc1  (sorts before 1.3.0)
#   no v* tag yet                 0.0.0+gitN.SHA  (N, the commit count, keeps
#                                 newer builds sorting higher)
#   modified tracked files        .dirty appended
# Outside a git checkout it fails: set VERSION (make) or VIGIL_PKG_VERSION
# (build.sh) instead.
set -eu

if ! git rev-parse --git-dir >/dev/null 2>&1; then
	echo "version.sh: not a git checkout; set the version explicitly" >&2
	exit 1
fi
# Stat changes (a touch, a fresh checkout) must not count as modifications.
git update-index -q --refresh >/dev/null 2>&1 || true
if d=$(git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null); then
	printf '%s\n' "${d#v}" | sed -E 's/-([0-9]+)-g([0-9a-f]+)/+\1.g\2/; s/-dirty$/.dirty/; s/-/~/g'
else
	n=$(git rev-list --count HEAD 2>/dev/null || echo 0)
	sha=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
	dirty=""
	git diff --quiet HEAD 2>/dev/null || dirty=.dirty
	echo "0.0.0+git$n.$sha$dirty"
fi
