#!/usr/bin/env bash
# Installs what Vigil's build and tests need on Debian 12, as root. Idempotent:
# packages already present are not fetched again.
set -euo pipefail

PKGS=(
  make git ca-certificates
  gcc libc6-dev  # go test -race (make test) needs cgo
  util-linux    # unshare: the PID-1 supervisor test
  iproute2      # ip netns: network-namespace tests
  nftables      # nft: the kernel lease and packet filter tests read the ruleset with it
  sip-tester    # sipp: real SIP peer for health checks and failover tests
  procps
  stress-ng     # bench-isolation, test/e2e noisy: the noisy neighbours
  keepalived    # bench-failover: the system Vigil is compared with (its unit does not start without /etc/keepalived/keepalived.conf)
  qemu-system-x86 busybox-static cpio  # make test-v2 / test/vm/v2: cgroup v2 tests in a qemu VM
  debootstrap e2fsprogs  # make test-vm: the .deb under a real systemd in a qemu VM
  systemd lintian rpm rpmlint  # go test ./packaging: systemd-analyze verify/security, package checks
  zsh mandoc groff-base  # go test ./cmd/vigil: zsh -n on the completion, mandoc -T lint and groff on the man pages
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Prometheus and promtool for the dashboard render test (metrics/render_test.go),
# unpacked rather than installed so that no Prometheus service starts.
promdir=/var/cache/vigil-deps/prometheus
if [ ! -x "$promdir/usr/bin/promtool" ] && [ "$(id -u)" -eq 0 ]; then
  tmp=$(mktemp -d)
  mkdir -p "$promdir" && chmod 755 "$tmp"
  (cd "$tmp" && apt-get download -qq prometheus) && dpkg -x "$tmp"/prometheus_*.deb "$promdir"
  rm -rf "$tmp"
fi

export PATH="/usr/local/go/bin:$PATH"
command -v go >/dev/null || { echo "install-deps: Go is not installed at /usr/local/go" >&2; exit 1; }
# Pinned so lint results do not change under us.
gobin="$(go env GOPATH)/bin"
if ! "$gobin/staticcheck" -version 2>/dev/null | grep -q '(0.8.2)'; then
  go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi
go mod download
