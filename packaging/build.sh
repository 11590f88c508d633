#!/usr/bin/env bash
# Builds dist/vigil_<version>_amd64.deb or dist/vigil-<version>.x86_64.rpm
# with nfpm (pinned below). `make deb` / `make rpm` call this.
#
#   packaging/build.sh deb|rpm
#
# VIGIL_PKG_VERSION overrides the version taken from git (the VM test uses it
# to build an upgrade); VIGIL_DIST the output directory (default dist, the
# tests use a temporary one); VIGIL_BIN packages that binary instead of
# building one (the VM test's upgrade package reuses the first one's).
# Prints the package's path on stdout.
set -euo pipefail

# v2.46 and later need go.digitalxero.dev modules that the module proxy here
# does not serve; v2.44.0 builds from the proxy alone.
NFPM_VERSION=v2.44.0

kind=${1:?usage: packaging/build.sh deb|rpm}
case $kind in deb | rpm) ;; *) echo "packaging/build.sh: unknown kind $kind (deb|rpm)" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."
GO=${GO:-go}
command -v "$GO" >/dev/null || GO=/usr/local/go/bin/go

# The version scheme (tag v1.2.0 -> 1.2.0, ...) is scripts/version.sh's, the
# same script `make build` uses, so the package and `vigil version` agree.
ver=${VIGIL_PKG_VERSION:-$(./scripts/version.sh)}
[[ $ver =~ ^[0-9][A-Za-z0-9.+~]*$ ]] || { echo "packaging/build.sh: bad version '$ver'" >&2; exit 2; }
commit=$(git rev-parse HEAD 2>/dev/null || echo "")

dist=${VIGIL_DIST:-dist}
work=$dist/.pkg
rm -rf "$work"
mkdir -p "$work"
if [ -n "${VIGIL_BIN:-}" ]; then
	cp "$VIGIL_BIN" "$work/vigil"
else
	CGO_ENABLED=0 "$GO" build -trimpath -ldflags "-s -w -X main.version=$ver -X main.commit=$commit" -o "$work/vigil" ./cmd/vigil
fi
gzip -n -9 -c packaging/vigil.8 >"$work/vigil.8.gz"
gzip -n -9 -c packaging/vigil.yaml.5 >"$work/vigil.yaml.5.gz"
# The completion scripts come from the binary itself, so they match it.
"$work/vigil" completion bash >"$work/vigil.bash-completion"
"$work/vigil" completion zsh >"$work/_vigil"
# Debian and rpm both want a changelog; this one entry names the build.
maintainer=$(sed -n 's/^maintainer: *//p' packaging/nfpm.yaml)
date=$(git log -1 --format=%cI 2>/dev/null || date -Iseconds)
cat >"$work/changelog.yml" <<YAML
- semver: "$ver-1"
  date: "$date"
  deb: {urgency: medium, distributions: [unstable]}
  packager: $maintainer
  changes:
    - commit: "${commit:-unknown}"
      note: "Build of git commit ${commit:0:12}."
YAML

# nfpm.yaml names the generated files under dist/.pkg/; the copy names $work.
# The docs, one entry each: rpm's %doc takes no glob.
sed "s#dist/\.pkg/#$work/#" packaging/nfpm.yaml >"$work/nfpm.yaml"
for f in README.md docs/*.md; do
	[ -f "$f" ] || continue
	printf '  - {src: %s, dst: /usr/share/doc/vigil/%s, type: doc, packager: rpm, file_info: {mode: 0644}}\n' "$f" "${f##*/}"
	printf '  - {src: %s, dst: /usr/share/doc/vigil/%s, packager: deb, file_info: {mode: 0644}}\n' "$f" "${f##*/}"
done >>"$work/nfpm.yaml"

case $kind in
deb) out=$dist/vigil_${ver}_amd64.deb ;;
rpm) out=$dist/vigil-${ver}.x86_64.rpm ;;
esac
rm -f "$out"
VIGIL_VERSION=$ver \
	"$GO" run "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION" pkg --config "$work/nfpm.yaml" --packager "$kind" --target "$out" >&2
rm -rf "$work"
echo "$out"
