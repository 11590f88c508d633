#!/usr/bin/env bash
# A local demo of Vigil's main job on one host: `vigil supervise` keeps a SIP
# server (sipp answering OPTIONS) and a helper process running, each in its own
# cgroup, health-checks the SIP server with real OPTIONS, and restarts what
# dies. Needs root (it builds cgroups). Everything lives in a temp dir and a
# cgroup subtree of its own, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (cgroups)"; exit 1; }
VIGIL=${VIGIL:-$PWD/bin/vigil}
[ -x "$VIGIL" ] || { echo "demo: build first (make build)"; exit 1; }
command -v sipp >/dev/null || { echo "demo: sipp missing (make deps)"; exit 1; }

dir=$(mktemp -d /tmp/vigil-demo.XXXXXX)
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" || true; fi
  [ -n "${VIGIL_KEEP:-}" ] || rm -rf "$dir"
}
trap cleanup EXIT

"$VIGIL" keygen "$dir/cluster.key" >/dev/null
cp supervisor/health/testdata/sipp_options_200.xml "$dir/uas.xml"
cat > "$dir/vigil.yaml" <<YAML
cluster:
  name: demo
  node: a
  key_file: $dir/cluster.key
  nodes: [{id: a, address: 127.0.0.1:17400}]
control: {realtime: false}
metrics: {listen: ""}
runtime: {control_socket: $dir/control.sock, state_dir: $dir/state, cgroup: vigil-demo}
processes:
  - name: sip
    command: [$(command -v sipp), -sf, $dir/uas.xml, -i, 127.0.0.1, -p, "15060", -nostdin]
    dir: $dir
    critical: true
    health:
      sip_options: {target: "sip:127.0.0.1:15060", interval: 500ms, timeout: 200ms, rise: 1, fall: 2}
  - name: ticker
    command: [/bin/sh, -c, "while :; do echo tick; sleep 5; done"]
YAML
"$VIGIL" check -c "$dir/vigil.yaml"

echo "== starting vigil supervise (log: $dir/vigil.log)"
"$VIGIL" supervise -c "$dir/vigil.yaml" >"$dir/vigil.log" 2>&1 &
pid=$!
st() { "$VIGIL" status --socket "$dir/control.sock" "$@"; }
for _ in $(seq 100); do st >/dev/null 2>&1 && break; sleep 0.1; done
for _ in $(seq 50); do st --json | grep -q '"health": "healthy"' && break; sleep 0.1; done
st

sip_pid=$(st --json | sed -n '/"name": "sip"/,/}/s/.*"pid": \([0-9]*\).*/\1/p' | head -1)
echo
echo "== kill -9 of the SIP server (pid $sip_pid): vigil restarts it in its cgroup"
kill -9 "$sip_pid"
sleep 1.5
st
echo
echo "== the journal of it:"
grep -E 'event=(exit|start|health|node_health)' "$dir/vigil.log" | tail -n 8
echo
echo "== SIGTERM: every process stopped, the cgroup tree removed"
kill -TERM "$pid"; wait "$pid"; pid=""
tail -n 3 "$dir/vigil.log"
