#!/bin/sh
# Runs this package's tests on cgroup v2 in a qemu VM (TCG, about 10 s).
# Needs: qemu-system-x86, busybox-static, cpio (Debian packages) and
# apt-get download access for the Debian cloud kernel.
# Usage: cgroup/testdata/run-v2-vm.sh [go test -run regexp] [count]
set -eu
RUN=${1:-.}
COUNT=${2:-1}
PKG=$(cd "$(dirname "$0")/.." && pwd)
WORK=${VIGIL_VM_DIR:-/tmp/vigil-cgroup-vm}
mkdir -p "$WORK"
cd "$WORK"
if ! ls k/boot/vmlinuz-* >/dev/null 2>&1; then
	img=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
	apt-get download "$img"
	dpkg-deb -x "$img"_*.deb k
fi
rm -rf initrd && mkdir -p initrd/bin initrd/proc initrd/sys initrd/dev initrd/tmp
cp /bin/busybox initrd/bin/
for b in sh sleep cat mount poweroff; do ln -s busybox "initrd/bin/$b"; done
(cd "$PKG" && CGO_ENABLED=0 go test -c -o "$WORK/initrd/cgtest" .)
cat > initrd/init <<INIT
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t cgroup2 none /sys/fs/cgroup
/cgtest -test.v -test.count=$COUNT -test.run='$RUN' 2>&1
echo "RESULT rc=\$?"
poweroff -f
INIT
chmod +x initrd/init
(cd initrd && find . | cpio -o -H newc 2>/dev/null | gzip -1 >../initrd.gz)
timeout 600 qemu-system-x86_64 -nographic -no-reboot -m 1024 -smp 2 \
	-kernel k/boot/vmlinuz-* -initrd initrd.gz \
	-append "console=ttyS0 panic=-1 quiet" >vm.log 2>&1 || true
grep -E '^ *(---|===|ok|FAIL|PASS)|kernel_test|fake_test|RESULT' vm.log
grep -q '^RESULT rc=0$' vm.log
