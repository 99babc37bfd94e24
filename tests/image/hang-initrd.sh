#!/usr/bin/env bash
# Builds a guest image that never answers: its /init (busybox sh) just sleeps forever, so the
# agent never listens on vsock. Used by the "guest never answers" bad-input test.
#
#   tests/image/hang-initrd.sh [OUT]      (default OUT: target/tests/hang-initrd.img)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${1:-$(cd "$HERE/../.." && pwd)/target/tests/hang-initrd.img}
BUSYBOX=/bin/busybox
[[ -x $BUSYBOX ]] || { echo "hang-initrd.sh: error: $BUSYBOX missing: apt-get install busybox-static" >&2; exit 1; }
KEY=$({ sha256sum < "$BUSYBOX"; sha256sum < "${BASH_SOURCE[0]}"; } | sha256sum | cut -c1-16)
[[ -s $OUT && -f $OUT.key && $(cat "$OUT.key") == "$KEY" ]] && exit 0
W=$(mktemp -d); trap 'rm -rf -- "$W"' EXIT
mkdir -p "$W/bin" "$W/dev" "$W/proc"
cp "$BUSYBOX" "$W/bin/busybox"
cat > "$W/init" <<'INIT'
#!/bin/busybox sh
# kata-rs test guest: boots, says so on the console, never starts an agent.
/bin/busybox mount -t devtmpfs dev /dev && echo "kata-rs-test: hang guest /init running, no agent" > /dev/console
while :; do /bin/busybox sleep 3600; done
INIT
chmod 0755 "$W/init"
find "$W" -exec touch -h -d @0 {} +
mkdir -p "$(dirname "$OUT")"
(cd "$W" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) > "$OUT.tmp"
mv -f "$OUT.tmp" "$OUT"; echo "$KEY" > "$OUT.key"
