#!/usr/bin/env bash
# Builds a tiny busybox initramfs for trying kata-vmm alone (see vmm/README.md).
#
#   vmm/scripts/test-initrd.sh OUT.cpio [VSOCK_ECHO_BINARY]
#
# /init mounts proc/sys/dev, prints "KATA-TEST:" markers (CPU count, each virtio device and its
# driver, the current hwrng and 16 bytes read from /dev/hwrng, each virtio disk's size, ro flag,
# serial and first bytes; with kt.blkwrite it writes "KATA-BLK-WRITE" at sector 1 of each), then by kernel command line flag: kt.vsock -> `vsock_echo listen 1024` (one echo),
# kt.exit -> init exits (guest kernel panic -> kata-vmm exit 2); finally `reboot -f` (exit 0).
set -euo pipefail
OUT=${1:?usage: test-initrd.sh OUT.cpio [vsock_echo]}
ECHO=${2:-}
BUSYBOX=${BUSYBOX:-/bin/busybox}
ROOT=$(mktemp -d)
trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT"/{bin,proc,sys,dev,tmp}
cp "$BUSYBOX" "$ROOT/bin/busybox"
for a in sh mount ls cat echo readlink basename sleep reboot nproc grep mkdir head od tr dd; do
    ln -s busybox "$ROOT/bin/$a"
done
[[ -n $ECHO ]] && cp "$ECHO" "$ROOT/bin/vsock_echo"
cat > "$ROOT/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev 2>/dev/null
echo "KATA-TEST: init up, cpus=$(nproc) kernel=$(cat /proc/sys/kernel/osrelease)"
for d in /sys/bus/virtio/devices/*; do
  echo "KATA-TEST: virtio $(basename $d) device=$(cat $d/device) driver=$(basename $(readlink $d/driver))"
done
if [ -e /sys/class/misc/hw_random/rng_current ]; then
  echo "KATA-TEST: hwrng current=$(cat /sys/class/misc/hw_random/rng_current)"
  echo "KATA-TEST: hwrng bytes=$(head -c 16 /dev/hwrng | od -An -tx1 | tr -d ' \n')"
fi
for b in /sys/block/vd*; do
  [ -e "$b" ] || continue
  n=$(basename $b)
  echo "KATA-TEST: disk $n sectors=$(cat $b/size) ro=$(cat $b/ro) serial=$(cat $b/serial 2>/dev/null) head=$(head -c 16 /dev/$n | od -An -c | tr -s ' ')"
  case "$(cat /proc/cmdline)" in *kt.blkwrite*)
    if echo KATA-BLK-WRITE | dd of=/dev/$n bs=512 seek=1 conv=fsync 2>/dev/null; then r=ok; else r=failed; fi
    echo "KATA-TEST: disk $n write $r" ;;
  esac
done
case "$(cat /proc/cmdline)" in
  *kt.exit*) echo "KATA-TEST: init exits (-> panic)"; exit 1 ;;
  *kt.vsock*) /bin/vsock_echo listen 1024 ;;
esac
echo "KATA-TEST: rebooting"
reboot -f
INIT
chmod +x "$ROOT/init"
(cd "$ROOT" && find . | cpio -o -H newc --quiet) > "$OUT"
echo "test initrd: $OUT"
