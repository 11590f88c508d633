#!/usr/bin/env bash
# Runs the cgroup v2 tests in a qemu VM (TCG) that boots Debian's cloud
# kernel with a busybox initramfs and cgroup2 at /sys/fs/cgroup, every
# controller available at the root (DESIGN.md, "Test infrastructure").
#
# Packages run in the guest, each a static `go test -c` binary:
#   cgroup          the cgroup package (its v2 tests, e.g. UseCgroupFD)
#   supervise       test/supervise, the `vigil supervise` end-to-end tests
#   vmv2            test/vm/v2's guest tests: placement at clone time, cgroup.kill,
#                   the supervisor in control/supervisor, controllers, cleanup
#   netfloat        TestAliveRefreshOnThisKernel only: the kernel lease's hand-built
#                   nftables refresh on Debian 12's kernel (nf_tables, a module there,
#                   is loaded from the same package)
# Each prints "VMRESULT pkg=<name> rc=<code>" on the serial console; this
# script fails unless every package printed rc=0.
#
# Host tools: go, qemu-system-x86_64 (TCG: no KVM needed), static busybox,
# cpio, gzip, and apt-get/dpkg-deb for the kernel, downloaded once into the
# cache. Debian packages: qemu-system-x86 busybox-static cpio.
#
# Environment:
#   VIGIL_VM_RUN       -test.run regexp for every package (default: all)
#   VIGIL_VM_SKIP      -test.skip regexp for every package (default: the tests whose subject is
#                      timing, not cgroups: the cluster protocol, the watchdog cadence, realtime
#                      scheduling. Under TCG emulation on a shared 2-core host they measure the
#                      emulator. They run on the host's real kernel in `make test`. So do
#                      those that need a bridge, which the VM's kernel cannot make: listed
#                      here, and skipped by netnstest.New in the guest in any case.)
#   VIGIL_VM_COUNT     -test.count (default 1)
#   VIGIL_VM_PKGS      packages to run, space separated (default: "cgroup supervise vmv2 netfloat")
#   VIGIL_VM_DIR       work dir (default: a fresh temp dir, removed on success)
#   VIGIL_VM_CACHE     kernel cache (default: ${XDG_CACHE_HOME:-$HOME/.cache}/vigil-vm)
#   VIGIL_VM_TIMEOUT   seconds before the VM is killed (default 420)
#   VIGIL_VM_VERBOSE=1 print the whole serial log, not just the test lines
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
RUN=${VIGIL_VM_RUN:-.}
SKIP=${VIGIL_VM_SKIP-TestClusterFailover|TestSdNotify|TestRealtimeControlPlane|TestVIPFollowsTheLease|TestSwitchoverAndMaintenance|TestMaintenanceSurvivesRestart|TestEventsLoggedOnce|TestFaultHookOn(LostLease|VIPInterfaceDown|Fence)|TestReload(VIPsInPlace|InvalidConfigRefused|DuringFailover|NewInterface|CriticalProcessKeepsRole|BrokenCriticalProcessFailsOver)|TestStop|TestFailoverLogLine|TestFenceAddressNeverComesBack|TestStalledNodeManagerLeftToKernelLease|TestLostStateDirRejoins|TestManyVIPsMoveTogether|TestThreeNodesNoWitness|TestService(FailsBackToPreferredNode|StaysWithoutFailback)|TestSecondInstanceWithFloatingIPsRefused|TestActiveActivePair|TestMisorderedServicesHoldNothing|TestAddingASecondService|TestFourServices|TestVIPOnMissingInterface|TestIPv6DisabledOnVIPInterface|TestLastManStanding}
COUNT=${VIGIL_VM_COUNT:-1}
PKGS=${VIGIL_VM_PKGS:-cgroup supervise vmv2 netfloat}
# The kernel's modules the guest loads (insmod, in this order): nf_tables for
# the kernel lease. Built in or absent, a module is simply not loaded.
MODULES="net/netfilter/nfnetlink.ko lib/libcrc32c.ko net/netfilter/nf_tables.ko"
MODNAMES=""
for m in $MODULES; do MODNAMES="$MODNAMES ${m##*/}"; done
CACHE=${VIGIL_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vigil-vm}
TIMEOUT=${VIGIL_VM_TIMEOUT:-420}
GO=${GO:-go}
command -v "$GO" >/dev/null || GO=/usr/local/go/bin/go

for tool in qemu-system-x86_64 cpio gzip; do
	command -v "$tool" >/dev/null || { echo "run-v2-vm: $tool not installed (Debian: qemu-system-x86, cpio)" >&2; exit 2; }
done
# The initramfs has no libc: busybox must be the static build.
BUSYBOX=$(command -v busybox || true)
if [ -z "$BUSYBOX" ] || ldd "$BUSYBOX" >/dev/null 2>&1; then
	echo "run-v2-vm: no static busybox (Debian: busybox-static)" >&2
	exit 2
fi

if [ -n "${VIGIL_VM_DIR:-}" ]; then
	WORK=$VIGIL_VM_DIR
	rm -rf "$WORK/initrd"
	mkdir -p "$WORK"
else
	WORK=$(mktemp -d /tmp/vigil-vm-v2.XXXXXX)
fi
LOG=$WORK/serial.log
t0=$(date +%s.%N)
elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# --- kernel: Debian's cloud kernel (LZ4, boots faster than the generic XZ one),
# cached per package name so a new Debian point release is fetched once.
kernel() {
	mkdir -p "$CACHE"
	local img
	img=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}' || true)
	if [ -z "$img" ] && [ "$(id -u)" -eq 0 ]; then
		apt-get update -qq >&2 || true
		img=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}' || true)
	fi
	if [ -z "$img" ]; then
		# No apt metadata (offline): use the newest cached kernel.
		img=$(ls -1 "$CACHE" 2>/dev/null | grep '^linux-image-' | sort -V | tail -1 || true)
		[ -n "$img" ] || { echo "run-v2-vm: cannot resolve linux-image-cloud-amd64 and nothing cached in $CACHE" >&2; return 1; }
	fi
	# v2-modules.ok: the modules were taken too (a cache from before has
	# the kernel alone, and is fetched again once).
	if [ ! -s "$CACHE/$img/vmlinuz" ] || [ ! -e "$CACHE/$img/v2-modules.ok" ]; then
		local dl m
		dl=$(mktemp -d "$CACHE/dl.XXXXXX")
		(cd "$dl" && apt-get download -q -o APT::Sandbox::User=root "$img" >&2 && dpkg-deb -x "$img"_*.deb x) || { rm -rf "$dl"; return 1; }
		mkdir -p "$CACHE/$img/v2-modules"
		for m in $MODULES; do
			cp "$dl"/x/lib/modules/*/kernel/"$m" "$CACHE/$img/v2-modules/" 2>/dev/null || true
		done
		cp "$dl"/x/boot/vmlinuz-* "$CACHE/$img/vmlinuz.tmp"
		mv "$CACHE/$img/vmlinuz.tmp" "$CACHE/$img/vmlinuz"
		touch "$CACHE/$img/v2-modules.ok"
		rm -rf "$dl"
	fi
	echo "$CACHE/$img/vmlinuz"
}
VMLINUZ=$(kernel)
echo "run-v2-vm: kernel $VMLINUZ ($(elapsed) s)"

# --- initramfs
I=$WORK/initrd
mkdir -p "$I"/{bin,usr/bin,lib64,lib/x86_64-linux-gnu,etc,proc,sys,dev,tmp,t,root}
cp "$BUSYBOX" "$I/bin/busybox"
for a in $("$BUSYBOX" --list); do
	case $a in busybox|unshare) continue ;; esac
	ln -sf busybox "$I/bin/$a"
done
# The PID-1 test runs `unshare --pid --fork --kill-child --mount-proc`: busybox's
# unshare lacks --kill-child, so util-linux's goes in with its libraries.
UNSHARE=$(command -v unshare || true)
if [ -n "$UNSHARE" ]; then
	cp "$UNSHARE" "$I/bin/unshare"
	for lib in $(ldd "$UNSHARE" | awk '/=>/ {print $3} /^\t\/lib/ {print $1}'); do
		mkdir -p "$I$(dirname "$lib")"
		cp -L "$lib" "$I$lib"
	done
fi # else no unshare: the PID-1 test skips itself
cat >"$I/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$I/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
mkdir -p "$I/lib/modules"
for m in $MODULES; do
	f="$(dirname "$VMLINUZ")/v2-modules/$(basename "$m")"
	if [ -e "$f" ]; then cp "$f" "$I/lib/modules/"; fi
done

(
	cd "$ROOT"
	export CGO_ENABLED=0
	"$GO" build -trimpath -o "$I/bin/vigil" ./cmd/vigil
	for p in $PKGS; do
		case $p in
		cgroup) src=./cgroup ;;
		supervise) src=./test/supervise ;;
		vmv2) src=./test/vm/v2 ;;
		netfloat) src=./netfloat ;;
		*) echo "run-v2-vm: unknown package $p" >&2; exit 2 ;;
		esac
		"$GO" test -c -o "$I/t/$p.test" "$src"
	done
)
echo "run-v2-vm: built ($(elapsed) s)"

# /init runs every package in turn with -test.v and reports one result line
# each, then powers off. The guest has 2 cpus: a cpuset test pins to cpu 1.
cat >"$I/init" <<EOF
#!/bin/sh
export PATH=/bin:/usr/bin HOME=/root VIGIL_BIN=/bin/vigil VIGIL_VM_GUEST=1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t cgroup2 none /sys/fs/cgroup
ip link set lo up
for m in $MODNAMES; do
	[ -e /lib/modules/\$m ] && insmod /lib/modules/\$m 2>&1 | sed 's/^/VMINSMOD /'
done
echo "VMINFO kernel=\$(uname -r) cpus=\$(nproc) controllers=\$(cat /sys/fs/cgroup/cgroup.controllers | tr ' ' ,)"
for p in $PKGS; do
	echo "VMSTART pkg=\$p"
	s=\$(cut -d' ' -f1 /proc/uptime)
	run='$RUN'
	# netfloat: only what the VM is for (its kernel's nf_tables); the rest
	# needs a bridge and the nft CLI, and runs on the host.
	[ "\$p" = netfloat ] && run='^TestAliveRefreshOnThisKernel\$'
	(cd /tmp && /t/\$p.test -test.v -test.count=$COUNT -test.timeout=180s -test.run="\$run" -test.skip='$SKIP' 2>&1)
	rc=\$?
	echo "VMRESULT pkg=\$p rc=\$rc secs=\$(awk -v s=\$s '{ printf "%.1f", \$1 - s }' /proc/uptime)"
done
echo VMDONE
poweroff -f
EOF
chmod +x "$I/init"
(cd "$I" && find . | cpio -o -H newc --quiet | gzip -1 >"$WORK/initrd.gz")
echo "run-v2-vm: initramfs $(du -h "$WORK/initrd.gz" | cut -f1) ($(elapsed) s)"

# --- boot
# cryptomgr.notests: the kernel's crypto self-tests are where an emulated
# CPU starved by a busy host has been seen to soft-lock for minutes before
# init ever ran; they test nothing of ours.
boot() {
	set +e
	timeout "$TIMEOUT" qemu-system-x86_64 -nographic -no-reboot -m 1024 -smp 2 \
		-kernel "$VMLINUZ" -initrd "$WORK/initrd.gz" \
		-append "console=ttyS0 panic=-1 quiet cryptomgr.notests" </dev/null >"$LOG" 2>&1
	qrc=$?
	set -e
}
boot
# A guest that never reached /init is the emulator's failure, not a test's:
# boot once more. A guest that ran any test is never retried.
if ! grep -q 'VMINFO' "$LOG"; then
	echo "run-v2-vm: the guest never reached /init (qemu rc=$qrc); booting once more" >&2
	cp "$LOG" "$LOG.first"
	boot
fi
# A guest that froze whole is the emulator's failure too: qemu was killed
# at the timeout, yet each test binary's own -test.timeout (180 s, well
# inside it) never fired, so no guest timer ran for minutes. Seen once in
# CI, in the middle of a cgroup test that passed 300 of 300 times in a
# loop. Run once more, saying so; a test that failed, panicked or timed
# out by itself is never retried.
if [ "$qrc" -eq 124 ] && grep -q 'VMINFO' "$LOG" && ! grep -q 'panic: test timed out' "$LOG"; then
	echo "run-v2-vm: the guest froze (killed at the ${TIMEOUT}s timeout, no test timed out by itself; its last line: $(tr -d '\r' <"$LOG" | grep -v -e '^$' -e '^qemu-system' | tail -1)); running it once more" >&2
	cp "$LOG" "$LOG.frozen"
	boot
fi
# Strip CRs and the firmware's terminal escapes, which end up before the
# first line the guest prints.
sed -e 's/\r//g' -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\x1b[a-z]//g' "$LOG" >"$LOG.txt"
echo "run-v2-vm: VM ran ($(elapsed) s total, qemu rc=$qrc)"

if [ "${VIGIL_VM_VERBOSE:-}" = 1 ]; then
	cat "$LOG.txt"
else
	grep -E '^(VM|=== RUN|--- |ok |FAIL|PASS|panic:|goroutine )|^ +' "$LOG.txt" || true
fi

fail=0
[ "$qrc" -eq 124 ] && { echo "run-v2-vm: FAIL: VM timed out after ${TIMEOUT}s" >&2; fail=1; }
grep -q '^VMINFO .*controllers=.*memory' "$LOG.txt" || { echo "run-v2-vm: FAIL: no cgroup2 with controllers in the guest" >&2; fail=1; }
for p in $PKGS; do
	line=$(grep "^VMRESULT pkg=$p " "$LOG.txt" || true)
	if [ -z "$line" ]; then
		echo "run-v2-vm: FAIL: $p: no result (crash or timeout; serial log $LOG.txt)" >&2
		fail=1
	elif [[ $line != *" rc=0 "* ]]; then
		echo "run-v2-vm: FAIL: $line" >&2
		fail=1
	else
		echo "run-v2-vm: ok: $line"
	fi
done
if [ "$fail" -ne 0 ]; then
	echo "run-v2-vm: serial log kept in $LOG.txt" >&2
	exit 1
fi
[ -n "${VIGIL_VM_DIR:-}" ] || rm -rf "$WORK"
echo "run-v2-vm: PASS ($(elapsed) s)"
