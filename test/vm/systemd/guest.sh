#!/bin/bash
# Inside the VM (scripts/vm-systemd-test.sh): installs the vigil .deb and
# checks it under systemd. Prints "VMTEST PASS name" or "VMTEST FAIL name:
# why" for each check in test/vm/systemd/checks, then powers off. Waits poll
# for a state with a deadline; nothing sleeps blindly.
set -u
export PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive
CG=/sys/fs/cgroup/system.slice/vigil.service
VIP=192.0.2.100
T0=$SECONDS
FAILED=0

fail() { echo "VMTEST FAIL $1: $2"; }
# check NAME FUNC: runs FUNC, which prints why on failure.
check() {
	local name=$1 out
	shift
	if out=$("$@" 2>&1); then
		echo "VMTEST PASS $name"
		echo "VMINFO $name t=$((SECONDS - T0))s: $(tail -n 1 <<<"$out")"
	else
		fail "$name" "$(tail -n 5 <<<"$out" | tr '\n' ' ')"
		# The evidence: what the check saw and what vigil logged.
		sed "s/^/VMLOG $name: /" <<<"$out" | tail -n 40
		journalctl -u vigil.service -n 40 --no-pager -o short-monotonic | cut -c1-400 | sed "s/^/VMLOG $name journal: /"
		FAILED=1
	fi
}
# until_ok SECS CMD...: polls CMD every 0.2 s until it succeeds or SECS pass.
until_ok() {
	local end=$((SECONDS + $1))
	shift
	until "$@" >/dev/null 2>&1; do
		[ $SECONDS -lt $end ] || return 1
		sleep 0.2
	done
}
mainpid() { systemctl show -p MainPID --value vigil.service; }
sleeper_pid() { pgrep -x -f '/bin/sleep 100000' | head -1; }
is_active() { [ "$(systemctl is-active vigil.service)" = active ]; }
has_vip() { ip -o addr show dev dummy0 | grep -q " $VIP/"; }

echo "VMINFO kernel=$(uname -r) systemd=$(systemctl --version | head -1 | cut -d' ' -f2) cgroup=$(stat -fc %T /sys/fs/cgroup) controllers=$(tr ' ' , </sys/fs/cgroup/cgroup.controllers)"
ip link set dummy0 up 2>/dev/null || echo "VMINFO no dummy0: vip checks will fail"
# modules.dep for the copied /lib/modules, so the kernel can autoload
# modules (netlink families) as on an installed host.
depmod -a || echo "VMINFO depmod failed: module autoloading will not work"

t_install() {
	apt-get install -y -q /vmtest/vigil-1.deb || return 1
	dpkg -s vigil | grep -q '^Status: install ok installed' || { echo "dpkg -s: not installed"; return 1; }
	vigil version
}
t_keygen() {
	[ "$(stat -c %a:%U /etc/vigil/cluster.key)" = 600:root ] || { ls -l /etc/vigil; return 1; }
}
t_not_started() {
	local a e
	a=$(systemctl is-active vigil.service)
	e=$(systemctl is-enabled vigil.service)
	[ "$a" = inactive ] && [ "$e" = disabled ] || { echo "after install: is-active=$a is-enabled=$e (want inactive, disabled)"; return 1; }
}

# A one-node cluster with one floating IP and one process. The protocol's
# timing is relaxed tenfold: a TCG guest on a busy 2-core host stalls for
# longer than the default 200 ms lease, and the supervisor would fence (kill)
# a node manager that simply was not scheduled.
write_config() {
	cat >/etc/vigil/vigil.yaml <<YAML
# edited by the VM test
cluster:
  name: vmtest
  node: local
  role: node
  key_file: /etc/vigil/cluster.key
  nodes:
    - {id: local, address: 127.0.0.1:7400}
  timing: {token_interval: 200ms, token_timeout: 1500ms, lease: 3s, drift_margin: 300ms}
vips:
  - {address: $VIP/24, interface: dummy0}
control:
  cpu_weight: 10000
  memory_min: 64Mi
apps:
  cpu_weight: 100
processes:
  - name: sleeper
    command: [/bin/sleep, "100000"]
    restart: always
$1
log:
  level: debug
YAML
}
mkdir -p /etc/systemd/system/vigil.service.d
# The shipped WatchdogSec (10 s): 4 s tripped without any SIGSTOP when TCG
# on a loaded host stalled the guest. A short abort timeout bounds the wait
# should SIGABRT not end the frozen process.
cat >/etc/systemd/system/vigil.service.d/vmtest.conf <<'CONF'
[Service]
TimeoutAbortSec=10s
CONF
systemctl daemon-reload

t_ready() {
	write_config ""
	vigil check -c /etc/vigil/vigil.yaml || return 1
	# Type=notify: the start job finishes only after READY=1.
	systemctl enable --now vigil.service || { systemctl status vigil --no-pager; journalctl -u vigil --no-pager | tail -20; return 1; }
	is_active || { systemctl status vigil --no-pager; return 1; }
	echo "status: $(systemctl show -p StatusText --value vigil.service)"
}
t_cgroup_tree() {
	local w
	for g in control apps control/supervisor apps/sleeper; do
		[ -d "$CG/$g" ] || { echo "no $CG/$g; have: $(cd $CG && find . -type d | tr '\n' ' ')"; return 1; }
	done
	w=$(cat $CG/control/cpu.weight) && [ "$w" = 10000 ] || { echo "control/cpu.weight=$w"; return 1; }
	w=$(cat $CG/apps/cpu.weight) && [ "$w" = 100 ] || { echo "apps/cpu.weight=$w"; return 1; }
	grep -qx "$(mainpid)" $CG/control/supervisor/cgroup.procs || { echo "main pid $(mainpid) not in control/supervisor: $(cat /proc/$(mainpid)/cgroup)"; return 1; }
	# RestrictNamespaces= would make clone3 fail: CLONE_INTO_CGROUP must work.
	if journalctl -u vigil.service --no-pager | grep -q 'CLONE_INTO_CGROUP refused'; then
		journalctl -u vigil.service --no-pager | grep 'CLONE_INTO_CGROUP refused' | head -2
		return 1
	fi
	# v2: no process may sit in the service's own group once it has children.
	[ -z "$(cat $CG/cgroup.procs)" ] || { echo "processes left in $CG: $(cat $CG/cgroup.procs)"; return 1; }
}
t_process() {
	local p cg
	until_ok 30 sleeper_pid || { echo "no /bin/sleep 100000"; return 1; }
	p=$(sleeper_pid)
	cg=$(cat /proc/$p/cgroup) || { echo "sleeper $p vanished"; return 1; }
	[ "$cg" = "0::/system.slice/vigil.service/apps/sleeper" ] || { echo "sleeper in $cg"; return 1; }
}
t_status() {
	local out
	# Exit 0 once this one-node cluster's node is healthy and active (after its hold-off).
	until_ok 30 vigil status || { vigil status; echo "vigil status: exit $?"; return 1; }
	out=$(vigil status) || { echo "$out"; return 1; }
	grep -E '^sleeper +running' <<<"$out" || { echo "$out"; return 1; }
}
t_journal() {
	# Native journal fields: event and process as EVENT= and PROCESS=.
	until_ok 10 sh -c 'journalctl -u vigil.service PROCESS=sleeper EVENT=start -o cat | grep -q .' || {
		journalctl -u vigil.service -o verbose --no-pager | tail -40
		return 1
	}
}
t_vip() {
	until_ok 30 has_vip || { ip addr show dev dummy0; vigil status; return 1; }
}
t_reload() {
	write_config '  - {name: sleeper2, command: [/bin/sleep, "200000"], restart: always}'
	local before
	before=$(sleeper_pid)
	systemctl reload vigil.service || return 1
	until_ok 30 pgrep -x -f '/bin/sleep 200000' || { echo "sleeper2 not started"; vigil status; return 1; }
	[ -d $CG/apps/sleeper2 ] || { echo "no apps/sleeper2"; return 1; }
	[ "$(sleeper_pid)" = "$before" ] || { echo "unchanged sleeper was restarted"; return 1; }
}
t_sigkill() {
	local old oldp killed_at start=$SECONDS
	old=$(mainpid)
	killed_at=$(date +%s)
	oldp=$(sleeper_pid)
	systemctl kill -s SIGKILL vigil.service
	until_ok 90 sh -c "[ \"\$(systemctl show -p MainPID --value vigil.service)\" != $old ] && [ \"\$(systemctl show -p MainPID --value vigil.service)\" != 0 ] && systemctl is-active -q vigil.service" || {
		systemctl status vigil --no-pager
		return 1
	}
	until_ok 30 sh -c "p=\$(pgrep -x -f '/bin/sleep 100000'); [ -n \"\$p\" ] && [ \"\$p\" != $oldp ]" || { echo "sleeper not back"; return 1; }
	# The address outlives a SIGKILL in the kernel: what counts is that the
	# new node manager took the active role (and re-added it) again.
	until_ok 30 sh -c "journalctl -u vigil.service --since @$killed_at -o cat | grep -q 'became active'" || { echo "no 'became active' after the restart"; return 1; }
	until_ok 30 has_vip || { echo "vip not back"; return 1; }
	echo "restarted in $((SECONDS - start))s: main $old -> $(mainpid), $(systemctl show -p NRestarts vigil.service)"
}
t_watchdog() {
	local old stopped_at start=$SECONDS
	old=$(mainpid)
	stopped_at=$(date +%s)
	kill -STOP "$old"
	until_ok 120 sh -c "p=\$(systemctl show -p MainPID --value vigil.service); [ \"\$p\" != $old ] && [ \"\$p\" != 0 ] && systemctl is-active -q vigil.service" || {
		kill -CONT "$old"
		systemctl status vigil --no-pager
		return 1
	}
	journalctl -u vigil.service --since "@$stopped_at" --no-pager | grep -q 'Watchdog timeout' || { echo "restarted, but not by the watchdog"; return 1; }
	until_ok 30 sleeper_pid || { echo "sleeper not back"; return 1; }
	echo "watchdog restart after $((SECONDS - start))s"
}
t_stop() {
	systemctl stop vigil.service || return 1
	[ "$(systemctl is-active vigil.service)" = inactive ] || { systemctl status vigil --no-pager; return 1; }
	if pgrep -f '/bin/sleep [12]00000' >/dev/null || pgrep -x vigil >/dev/null; then
		echo "processes left: $(pgrep -a -f 'sleep|vigil')"
		return 1
	fi
	[ ! -e $CG ] || { echo "group left: $(find $CG -type d)"; return 1; }
	! has_vip || { echo "vip left on dummy0"; return 1; }
	journalctl -u vigil.service --no-pager | tail -3
}
t_upgrade() {
	local sum key before v
	sum=$(sha256sum </etc/vigil/vigil.yaml)
	key=$(sha256sum </etc/vigil/cluster.key)
	systemctl start vigil.service || return 1
	before=$(mainpid)
	apt-get install -y -q /vmtest/vigil-2.deb || return 1
	v=$(dpkg-query -W -f '${Version}' vigil)
	[ "$v" = "$(dpkg-deb -f /vmtest/vigil-2.deb Version)" ] || { echo "version after upgrade: $v"; return 1; }
	[ "$(sha256sum </etc/vigil/vigil.yaml)" = "$sum" ] || { echo "vigil.yaml changed"; head -3 /etc/vigil/vigil.yaml; return 1; }
	[ "$(sha256sum </etc/vigil/cluster.key)" = "$key" ] || { echo "cluster.key changed"; return 1; }
	ls /etc/vigil/*.dpkg-* 2>/dev/null && { echo "dpkg left files"; return 1; }
	# The upgrade does not restart a running vigil (a failover).
	[ "$(mainpid)" = "$before" ] && is_active || { echo "vigil restarted or stopped by the upgrade: $before -> $(mainpid)"; return 1; }
}
t_purge() {
	# The drop-in is the administrator's (here the test's), not the package's.
	rm -rf /etc/systemd/system/vigil.service.d
	apt-get purge -y -q vigil || return 1
	dpkg -s vigil >/dev/null 2>&1 && { echo "still installed"; return 1; }
	[ "$(systemctl is-active vigil.service)" != active ] || { echo "still active"; return 1; }
	pgrep -f '/bin/sleep [12]00000' && { echo "processes left"; return 1; }
	[ ! -e $CG ] || { echo "group left"; return 1; }
	! has_vip || { echo "vip left"; return 1; }
	local left
	left=$(find / -xdev \( -path /vmtest -o -path /proc -o -path /sys \) -prune -o -name '*vigil*' -print |
		grep -v -e '^/etc/systemd/system/vigil-vmtest.service$' -e '^/etc/systemd/system/multi-user.target.wants/vigil-vmtest.service$' -e '^/var/log/journal' -e '^/var/cache/apt/archives/')
	left+=$(ls -d /run/vigil /var/lib/vigil 2>/dev/null)
	[ -z "$left" ] || { echo "left behind: $left"; return 1; }
}

check install t_install
check keygen t_keygen
check not-started t_not_started
check ready t_ready
check cgroup-tree t_cgroup_tree
check process t_process
check status t_status
check journal-fields t_journal
check vip t_vip
check reload t_reload
check sigkill-restart t_sigkill
check watchdog-restart t_watchdog
check stop-clean t_stop
check upgrade-keeps-config t_upgrade
check purge t_purge
if [ "$FAILED" = 1 ]; then
	# The whole journal of the run, for the serial log the host keeps.
	journalctl -b --no-pager -o short-monotonic | cut -c1-600 | sed 's/^/VMJOURNAL /'
fi
echo "VMDONE t=$((SECONDS - T0))s"
systemctl poweroff --no-block
