#!/bin/sh
# Runs this package's tests on cgroup v2 in a qemu VM: a wrapper around
# test/vm/v2/run.sh, which also runs the `vigil supervise` tests (make test-v2).
# Usage: cgroup/testdata/run-v2-vm.sh [go test -run regexp] [count]
set -eu
VIGIL_VM_PKGS=cgroup VIGIL_VM_RUN=${1:-.} VIGIL_VM_COUNT=${2:-1} \
	exec "$(dirname "$0")/../../test/vm/v2/run.sh"
