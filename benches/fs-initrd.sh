#!/usr/bin/env bash
# Builds the guest of the fsvmm bench section (benches/README.md section 5): a busybox
# initramfs (Debian's busybox-static, as tests/image does) whose /init mounts the virtio-fs tag
# `kataShared` like the agent does (`mount -t virtiofs`, nosuid,nodev, no options), then
#   1. read: drop caches, `dd if=/mnt/read256 of=/dev/null bs=1M` (cold sequential read), twice
#      (the second cold read reuses guest frames the first touched: no first-touch cost);
#   2. untar into the share: `tar -xf` of the 10k-files tar (copied to tmpfs first, so only
#      the share's write/metadata path is timed) into /mnt/w/u, time-boxed, then `rm -rf`;
#   3. the same untar into guest tmpfs: the L2 guest's own CPU cost of tar, no virtio-fs;
#   4. dd of a 256 MiB file in guest tmpfs: the read's L2 CPU baseline (copy to user, no FUSE);
# timing each with /proc/uptime and printing `BENCHFS KEY ...` lines on the serial console,
# then `BENCHFS end`, a 3 s pause (the node samples the VMM's and virtiofsd's CPU times) and
# `reboot -f` (kata-vmm: reboot=k, QEMU: reboot=t with -no-reboot; both exit).
# Parameters from the kernel command line: fsb_secs=S (untar time box, default 45),
# fsb_files=N (files in the tar, for the extrapolation), fsb_tmpfs=0 (skip step 3),
# fsb_ra=KB (the share's read_ahead_kb, a guest-side knob; default: the kernel's).
#
#   benches/fs-initrd.sh [OUT]      (default OUT: target/bench/fsbench-initrd.img; cached)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${1:-$(cd "$HERE/.." && pwd)/target/bench/fsbench-initrd.img}
BUSYBOX=/bin/busybox
[[ -x $BUSYBOX ]] || { echo "fs-initrd.sh: error: $BUSYBOX missing: apt-get install busybox-static" >&2; exit 1; }
file -L "$BUSYBOX" 2>/dev/null | grep -q 'statically linked' \
    || { echo "fs-initrd.sh: error: $BUSYBOX is not static (busybox-static)" >&2; exit 1; }
KEY=$({ sha256sum < "$BUSYBOX"; sha256sum < "${BASH_SOURCE[0]}"; } | sha256sum | cut -c1-16)
[[ -s $OUT && -f $OUT.key && $(cat "$OUT.key") == "$KEY" ]] && exit 0
W=$(mktemp -d); trap 'rm -rf -- "$W"' EXIT
mkdir -p "$W/bin" "$W/dev" "$W/proc" "$W/sys" "$W/mnt" "$W/tmp"
cp "$BUSYBOX" "$W/bin/busybox"
cat > "$W/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t devtmpfs dev /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs -o size=300m tmp /tmp
exec > /dev/console 2>&1
b() { echo "BENCHFS $*"; }
now() { cut -d' ' -f1 /proc/uptime; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%d", (b - a) * 1000 + 0.5 }'; }
arg() { v=$(tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p" | tail -n1); echo "${v:-$2}"; }
SECS=$(arg fsb_secs 45) FILES=$(arg fsb_files 10000) TMPFS=$(arg fsb_tmpfs 1)
b "start uptime=$(now)"
FSDEV=
for d in /sys/bus/virtio/devices/*; do
    [ "$(cat "$d/device")" = 0x001a ] && FSDEV=${d##*/} && b "info device=$FSDEV features=$(cat "$d/features")"
done
# the virtio-fs device's interrupts so far (about one per completion batch)
irqs() { awk -v n="$FSDEV" '$NF == n { s = 0; for (i = 2; i < NF; i++) if ($i ~ /^[0-9]+$/) s += $i; print s; exit }' /proc/interrupts; }
if ! mount -t virtiofs -o nosuid,nodev kataShared /mnt; then b "error mount"; b end; sleep 3; reboot -f; fi
b "info mount=$(awk '$2 == "/mnt" { print $3 "," $4 }' /proc/mounts)"
# fsb_ra=KB: the share's readahead (its bdi, named after the mount's device number)
dev=$(stat -c %d /mnt)
RA=$(arg fsb_ra "") BDI=/sys/class/bdi/$(((dev >> 8) & 0xfff)):$(((dev & 0xff) | ((dev >> 12) & 0xfff00)))
[ -n "$RA" ] && echo "$RA" > "$BDI/read_ahead_kb"
b "info bdi=${BDI##*/} read_ahead_kb=$(cat "$BDI/read_ahead_kb" 2>/dev/null)"
# 1. cold sequential read
sync; echo 3 > /proc/sys/vm/drop_caches
i0=$(irqs) t0=$(now)
if dd if=/mnt/read256 of=/dev/null bs=1M 2>/tmp/dd.err; then
    b "read ms=$(ms "$t0" "$(now)") bytes=$(stat -c %s /mnt/read256) irqs=$(($(irqs) - i0))"
else
    b "error read $(tr '\n' ' ' < /tmp/dd.err)"
fi
# 1b. the same cold read again: the guest's page cache now reuses frames the first read already
#     touched, so the node's first-touch cost of guest RAM (memfd page allocation, nested page
#     table faults) is out of it; the difference to 1 is that cost
sync; echo 3 > /proc/sys/vm/drop_caches
i0=$(irqs) t0=$(now)
dd if=/mnt/read256 of=/dev/null bs=1M 2>/dev/null && b "read2 ms=$(ms "$t0" "$(now)") irqs=$(($(irqs) - i0))"
# untar DIR NAME: time-boxed tar -xf into DIR, count, rm -rf; prints
# "NAME ms=M n=N rm_ms=R" (measured over the n files extracted; the node extrapolates)
untar() {
    rm -rf "$1"; mkdir -p "$1"
    i0=$(irqs) t0=$(now)
    timeout "$SECS" tar -xf /tmp/files.tar -C "$1"
    t1=$(now) i1=$(irqs)
    n=$(find "$1" -type f | wc -l)
    rm -rf "$1"
    t2=$(now)
    b "$2 ms=$(ms "$t0" "$t1") n=$n rm_ms=$(ms "$t1" "$t2") irqs=$((i1 - i0))"
}
if cp /mnt/files.tar /tmp/files.tar; then
    sync
    # 2. untar into the share (the files go to the host through virtiofsd)
    mkdir -p /mnt/w && untar /mnt/w/u untar_share
    # 3. the same into the guest's tmpfs: L2 CPU baseline
    [ "$TMPFS" = 1 ] && untar /tmp/u untar_tmpfs
    rm -f /tmp/files.tar
else
    b "error no /mnt/files.tar"
fi
# 4. the read's L2 CPU baseline: the same dd from a file in guest tmpfs (page cache to user
#    copy, no FUSE), after the untars so that the 256 MiB are free then
if [ "$TMPFS" = 1 ] && dd if=/dev/zero of=/tmp/z bs=1M count=256 2>/dev/null; then
    t0=$(now)
    dd if=/tmp/z of=/dev/null bs=1M 2>/dev/null && b "read_tmpfs ms=$(ms "$t0" "$(now)")"
    rm -f /tmp/z
fi
b "end uptime=$(now)"
sleep 3
umount /mnt
reboot -f
INIT
chmod 0755 "$W/init"
find "$W" -exec touch -h -d @0 {} +
mkdir -p "$(dirname "$OUT")"
(cd "$W" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) > "$OUT.tmp"
mv -f "$OUT.tmp" "$OUT"; echo "$KEY" > "$OUT.key"
