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
# nm FIELD [CONFIG]: a scalar of the node manager's report in vigil status --json.
nm() {
	vigil status --json -c "${2:-/etc/vigil/vigil.yaml}" 2>/dev/null | tr -d ' \n' |
		grep -o '"nodemanager":{[^}]*' | grep -o "\"$1\":[^,]*" | head -1 | cut -d: -f2 | tr -d '"'
}
# cp_pids: the pids of vigil's control-plane processes (locator, node manager).
cp_pids() { cat $CG/control/locator/cgroup.procs $CG/control/nodemanager/cgroup.procs 2>/dev/null | sort | tr '\n' ' '; }

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
# kernel_lease: the node manager's nested report object, on one line.
kernel_lease() { vigil status --json 2>/dev/null | tr -d ' \n' | grep -o '"kernel_lease":{[^}]*' | head -1; }
# The lease in the kernel (nftables sets with per-element timeouts, in
# `table arp vigil` and `table inet vigil`) on Debian 12's own kernel:
# the active programs it and reports "enforcing" with no failure.
t_kernel_lease() {
	until_ok 30 sh -c 'vigil status --json | tr -d " \n" | grep -q "\"kernel_lease\":{\"state\":\"enforcing\""' ||
		{ echo "kernel $(uname -r): $(kernel_lease)"; return 1; }
	local kl
	kl=$(kernel_lease)
	case "$kl" in
	*'"failures":0'*) ;;
	*) echo "kernel $(uname -r): failures: $kl"; return 1 ;;
	esac
	case "$kl" in
	*'"applies":0,'*) echo "kernel $(uname -r): never applied: $kl"; return 1 ;;
	esac
	echo "kernel $(uname -r): $kl"
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
# An invalid file: `systemctl reload` fails (ExecReload=vigil reload), the
# daemon keeps running the old configuration, the role does not move.
t_reload_invalid() {
	local good main epoch out rc
	good=$(mktemp)
	cp /etc/vigil/vigil.yaml "$good"
	main=$(mainpid)
	until_ok 30 sh -c '[ "$(vigil status --json | tr -d " \n" | grep -o "\"role\":\"active\"" | head -1)" ]' || { echo "not active before the reload"; vigil status; return 1; }
	epoch=$(nm epoch)
	printf 'no_such_key: 1\n' >>/etc/vigil/vigil.yaml
	out=$(systemctl reload vigil.service 2>&1)
	rc=$?
	cp "$good" /etc/vigil/vigil.yaml
	rm -f "$good"
	[ $rc -ne 0 ] || { echo "systemctl reload returned 0 for an invalid file"; return 1; }
	journalctl -u vigil.service -n 30 --no-pager -o cat | grep -q 'no_such_key' || { echo "no error naming the key in the journal"; journalctl -u vigil.service -n 20 --no-pager -o cat; return 1; }
	is_active || { echo "vigil not active after a failed reload"; return 1; }
	[ "$(mainpid)" = "$main" ] || { echo "main pid changed: $main -> $(mainpid)"; return 1; }
	pgrep -x -f '/bin/sleep 200000' >/dev/null || { echo "sleeper2 gone after a failed reload"; return 1; }
	[ "$(nm epoch)" = "$epoch" ] && [ "$(nm role)" = active ] || { echo "role moved: epoch $epoch -> $(nm epoch), role $(nm role)"; return 1; }
	echo "systemctl reload rc=$rc, epoch $epoch kept"
}
# The README's old advice: SIGHUP (and USR1/USR2) to every process named
# vigil. The control-plane processes must survive it and the role stay.
t_hup_all() {
	local cp epoch
	until_ok 30 sh -c '[ "$(vigil status --json | tr -d " \n" | grep -o "\"role\":\"active\"" | head -1)" ]' || { echo "not active"; return 1; }
	cp=$(cp_pids)
	epoch=$(nm epoch)
	[ -n "$cp" ] || { echo "no control-plane pids under $CG/control"; return 1; }
	for sig in HUP USR1 USR2; do
		kill -s $sig $(pidof vigil) || { echo "kill -$sig failed"; return 1; }
	done
	# Give a signal that kills time to do so, by waiting for the daemon to
	# answer a full status round trip twice.
	vigil status >/dev/null && vigil status >/dev/null || { echo "vigil status failed after the signals"; return 1; }
	is_active || { echo "vigil.service not active"; return 1; }
	[ "$(cp_pids)" = "$cp" ] || { echo "control plane restarted: $cp -> $(cp_pids)"; journalctl -u vigil.service -n 20 --no-pager -o cat; return 1; }
	[ "$(nm epoch)" = "$epoch" ] && [ "$(nm role)" = active ] || { echo "role moved: epoch $epoch -> $(nm epoch), role $(nm role)"; return 1; }
	echo "HUP/USR1/USR2 to $(pidof vigil | wc -w) vigil processes: control plane $cp unchanged, epoch $epoch"
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
# An upgrade whose shipped vigil.yaml changed, over an edited one: the
# operator's file stays (dpkg's default under --force-confold, what
# unattended upgrades use), the new default lands beside it as
# vigil.yaml.dpkg-dist, and the running daemon is not restarted.
t_upgrade_conffile() {
	local sum before v
	sum=$(sha256sum </etc/vigil/vigil.yaml)
	before=$(mainpid)
	apt-get install -y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold /vmtest/vigil-3.deb || return 1
	v=$(dpkg-query -W -f '${Version}' vigil)
	[ "$v" = "$(dpkg-deb -f /vmtest/vigil-3.deb Version)" ] || { echo "version after upgrade: $v"; return 1; }
	[ "$(sha256sum </etc/vigil/vigil.yaml)" = "$sum" ] || { echo "the edited vigil.yaml was replaced"; return 1; }
	grep -q 'changed by the VM test' /etc/vigil/vigil.yaml.dpkg-dist || { echo "no vigil.yaml.dpkg-dist with the new default: $(ls /etc/vigil)"; return 1; }
	vigil check -c /etc/vigil/vigil.yaml.dpkg-dist >/dev/null || { echo "the new shipped default does not pass vigil check"; return 1; }
	[ "$(mainpid)" = "$before" ] && is_active || { echo "vigil restarted or stopped by the upgrade: $before -> $(mainpid)"; return 1; }
	rm -f /etc/vigil/vigil.yaml.dpkg-dist
}
# remove (not purge) then install again: the unit is enabled again as it
# was, the config and the key are the operator's, untouched.
t_reinstall() {
	local sum key e
	sum=$(sha256sum </etc/vigil/vigil.yaml)
	key=$(sha256sum </etc/vigil/cluster.key)
	e=$(systemctl is-enabled vigil.service)
	[ "$e" = enabled ] || { echo "before remove: is-enabled=$e"; return 1; }
	apt-get remove -y -q vigil || return 1
	[ "$(systemctl is-active vigil.service)" != active ] || { echo "still active after remove"; return 1; }
	! pgrep -f '/bin/sleep [12]00000' >/dev/null || { echo "processes left after remove"; return 1; }
	! has_vip || { echo "vip left after remove"; return 1; }
	[ -f /etc/vigil/vigil.yaml ] && [ -f /etc/vigil/cluster.key ] || { echo "remove took the config or the key: $(ls /etc/vigil)"; return 1; }
	apt-get install -y -q /vmtest/vigil-3.deb || return 1
	e=$(systemctl is-enabled vigil.service)
	[ "$e" = enabled ] || { echo "after reinstall: is-enabled=$e (want enabled, as before the remove)"; return 1; }
	[ "$(sha256sum </etc/vigil/vigil.yaml)" = "$sum" ] || { echo "vigil.yaml changed by remove+install"; return 1; }
	[ "$(sha256sum </etc/vigil/cluster.key)" = "$key" ] || { echo "cluster.key changed by remove+install"; return 1; }
	systemctl start vigil.service || return 1
	until_ok 30 has_vip || { echo "vip not back after the reinstall"; vigil status; return 1; }
}

# Two nodes and a witness under systemd, each in its own network namespace
# on a bridge (the VM's root namespace is the switch): vigil.service is node
# a (a drop-in puts it in netns va), vigil-b and vigil-w are copies of the
# shipped unit with their own config, socket and state directory. The
# floating IP moves a -> b on `vigil switchover` and back on `systemctl
# stop` of b (the orderly stop hands the role over).
HOSTS="a b w"
unit_of() { [ "$1" = a ] && echo vigil.service || echo "vigil-$1.service"; }
conf_of() { echo "/etc/vigil/ha-$1.yaml"; }
vip_on() { ip -n "v$1" -o addr show dev eth1 2>/dev/null | grep -q " $VIP/"; }
ha_setup() {
	local n i=11 u
	modprobe bridge 2>/dev/null; modprobe veth 2>/dev/null
	ip link add vbr0 type bridge || { echo "no bridge support in this kernel"; return 1; }
	ip link set vbr0 up
	for n in $HOSTS; do
		ip netns add "v$n" || return 1
		ip link add "vh$n" type veth peer name eth1 netns "v$n" || { echo "no veth support"; return 1; }
		ip link set "vh$n" master vbr0 up
		ip -n "v$n" link set lo up
		ip -n "v$n" addr add "192.0.2.$i/24" dev eth1
		ip -n "v$n" link set eth1 up
		i=$((i + 1))
		local role=node; [ "$n" = w ] && role=witness
		cat >"$(conf_of $n)" <<YAML
cluster:
  name: vmha
  node: $n
  role: $role
  key_file: /etc/vigil/cluster.key
  nodes:
    - {id: a, address: 192.0.2.11:7400}
    - {id: b, address: 192.0.2.12:7400}
  witnesses:
    - {id: w, address: 192.0.2.13:7400}
  timing: {token_interval: 200ms, token_timeout: 1500ms, lease: 3s, drift_margin: 300ms}
control:
  realtime: false
runtime:
  control_socket: /run/vigil-$n/control.sock
  state_dir: /var/lib/vigil-$n
YAML
		if [ "$role" = node ]; then
			cat >>"$(conf_of $n)" <<YAML
vips:
  - {address: $VIP/24, interface: eth1}
processes:
  - {name: sleeper, command: [/bin/sleep, "300000"], restart: always}
YAML
		fi
		vigil check -c "$(conf_of $n)" || return 1
	done
	# a: the packaged unit, moved into its namespace and onto its file.
	mkdir -p /etc/systemd/system/vigil.service.d
	cat >/etc/systemd/system/vigil.service.d/ha.conf <<CONF
[Service]
NetworkNamespacePath=/run/netns/va
ExecStart=
ExecStart=/usr/bin/vigil supervise -c $(conf_of a)
RuntimeDirectory=vigil-a
StateDirectory=vigil-a
ReadWritePaths=/var/lib/vigil-a /run/vigil-a
CONF
	for n in b w; do
		sed -e "s#-c /etc/vigil/vigil.yaml#-c $(conf_of $n)#" \
			-e "s#^RuntimeDirectory=vigil\$#RuntimeDirectory=vigil-$n#" \
			-e "s#^StateDirectory=vigil\$#StateDirectory=vigil-$n#" \
			-e "s#^ReadWritePaths=.*#ReadWritePaths=/var/lib/vigil-$n /run/vigil-$n#" \
			/lib/systemd/system/vigil.service >"/etc/systemd/system/$(unit_of $n)"
		printf '[Service]\nNetworkNamespacePath=/run/netns/v%s\n' "$n" >>"/etc/systemd/system/$(unit_of $n)"
	done
	systemctl daemon-reload
}
ha_teardown() {
	local n
	for n in $HOSTS; do systemctl stop "$(unit_of $n)" 2>/dev/null; done
	rm -f /etc/systemd/system/vigil-b.service /etc/systemd/system/vigil-w.service /etc/systemd/system/vigil.service.d/ha.conf
	systemctl daemon-reload
	for n in $HOSTS; do
		ip netns del "v$n" 2>/dev/null
		rm -f "$(conf_of $n)"
		rm -rf "/var/lib/vigil-$n" "/run/vigil-$n"
	done
	ip link del vbr0 2>/dev/null
	true
}
t_handover() {
	local n active standby out
	systemctl stop vigil.service || return 1
	ha_setup || { ha_teardown; return 1; }
	for n in w a b; do
		systemctl start "$(unit_of $n)" || { systemctl status "$(unit_of $n)" --no-pager; ha_teardown; return 1; }
	done
	until_ok 60 sh -c "ip -n va -o addr show dev eth1 | grep -q ' $VIP/' || ip -n vb -o addr show dev eth1 | grep -q ' $VIP/'" ||
		{ vigil status -c "$(conf_of a)"; ha_teardown; return 1; }
	if vip_on a; then active=a standby=b; else active=b standby=a; fi
	[ "$(nm active "$(conf_of $standby)")" = "$active" ] || until_ok 30 sh -c "vigil status --json -c $(conf_of $standby) | tr -d ' \n' | grep -q '\"active\":\"$active\"'" ||
		{ echo "$standby does not see $active active"; vigil status -c "$(conf_of $standby)"; ha_teardown; return 1; }
	# The active hands over only to a standby the token has shown it in
	# the ring and healthy; seeing the active from the standby is not that.
	until_ok 30 sh -c "vigil status --json -c $(conf_of $active) | tr -d ' \n' | grep -q '\"id\":\"$standby\",\"healthy\":true,\"maintenance\":false,\"in_ring\":true'" ||
		{ echo "$active does not see $standby as a healthy standby"; vigil status -c "$(conf_of $active)"; ha_teardown; return 1; }
	out=$(vigil switchover -c "$(conf_of $active)" --wait 30s 2>&1) || { echo "switchover: $out"; ha_teardown; return 1; }
	until_ok 30 vip_on "$standby" || { echo "vip not on $standby after the switchover"; ha_teardown; return 1; }
	until_ok 30 sh -c "! ip -n v$active -o addr show dev eth1 | grep -q ' $VIP/'" || { echo "vip still on $active after the switchover"; ha_teardown; return 1; }
	# The orderly stop of the new active hands the role back.
	systemctl stop "$(unit_of $standby)" || { ha_teardown; return 1; }
	until_ok 30 vip_on "$active" || { echo "vip not back on $active after stopping $standby"; vigil status -c "$(conf_of $active)"; ha_teardown; return 1; }
	vip_on "$standby" && { echo "vip still on the stopped $standby"; ha_teardown; return 1; }
	ha_teardown
	echo "$out; back to $active on stop"
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
check kernel-lease t_kernel_lease
check reload t_reload
check reload-invalid t_reload_invalid
check hup-all t_hup_all
check sigkill-restart t_sigkill
check watchdog-restart t_watchdog
check stop-clean t_stop
check upgrade-keeps-config t_upgrade
check upgrade-changed-conffile t_upgrade_conffile
check remove-reinstall t_reinstall
check handover t_handover
check purge t_purge
if [ "$FAILED" = 1 ]; then
	# The whole journal of the run, for the serial log the host keeps.
	journalctl -b --no-pager -o short-monotonic | cut -c1-600 | sed 's/^/VMJOURNAL /'
fi
echo "VMDONE t=$((SECONDS - T0))s"
systemctl poweroff --no-block
