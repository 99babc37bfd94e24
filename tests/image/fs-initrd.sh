#!/usr/bin/env bash
# Builds the virtio-fs test guest (tests/scripts/vmm-fs.sh): a busybox initramfs whose /init
# mounts `-t virtiofs kataShared /mnt`, reads the files the host put there, writes two files
# the host then checks, unmounts and mounts again, prints `kt-fs: KEY=VALUE` markers on the
# console, then sleeps (the test kills the backend under it and stops the VMM with SIGTERM).
#
#   tests/image/fs-initrd.sh [OUT]      (default OUT: target/tests/fs-initrd.img)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${1:-$(cd "$HERE/../.." && pwd)/target/tests/fs-initrd.img}
BUSYBOX=/bin/busybox
[[ -x $BUSYBOX ]] || { echo "fs-initrd.sh: error: $BUSYBOX missing: apt-get install busybox-static" >&2; exit 1; }
KEY=$({ sha256sum < "$BUSYBOX"; sha256sum < "${BASH_SOURCE[0]}"; } | sha256sum | cut -c1-16)
[[ -s $OUT && -f $OUT.key && $(cat "$OUT.key") == "$KEY" ]] && exit 0
W=$(mktemp -d); trap 'rm -rf -- "$W"' EXIT
mkdir -p "$W/bin" "$W/dev" "$W/proc" "$W/sys" "$W/mnt"
cp "$BUSYBOX" "$W/bin/busybox"
cat > "$W/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t devtmpfs dev /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
exec > /dev/console 2>&1
m() { echo "kt-fs: $1"; }
m "init=yes"
for d in /sys/bus/virtio/devices/*; do
    [ "$(cat "$d/device")" = 0x001a ] && m "device=$(basename "$d") features=$(cat "$d/features")"
done
if mount -t virtiofs kataShared /mnt; then m "mount=ok"; else m "mount=fail"; fi
m "fstype=$(awk '$2 == "/mnt" { print $3 }' /proc/mounts)"
m "read=$(cat /mnt/host.txt)"
m "blob-sha256=$(sha256sum /mnt/blob | cut -d' ' -f1)"
echo "written-by-the-guest" > /mnt/guest.txt && m "write=ok"
dd if=/dev/zero of=/mnt/guest-blob bs=64k count=32 2>/dev/null && sync && m "write-blob=ok"
if umount /mnt && mount -t virtiofs kataShared /mnt && [ -s /mnt/guest.txt ]; then
    m "remount=ok"
else
    m "remount=fail"
fi
m "done=yes"
while :; do sleep 3600; done
INIT
chmod 0755 "$W/init"
find "$W" -exec touch -h -d @0 {} +
mkdir -p "$(dirname "$OUT")"
(cd "$W" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) > "$OUT.tmp"
mv -f "$OUT.tmp" "$OUT"; echo "$KEY" > "$OUT.key"
