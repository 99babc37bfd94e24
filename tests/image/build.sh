#!/usr/bin/env bash
# Builds the test container image `kata-rs.local/busybox:latest` as an OCI image-layout archive
# (what `ctr image import` reads), from Debian's busybox-static, with plain tools only:
# tar, sha256sum, jq. No registry, no docker.
#
#   tests/image/build.sh [OUT]        (default OUT: target/tests/busybox-oci.tar)
#
# Reproducible: fixed mtimes (SOURCE_DATE_EPOCH, default 0), sorted tar entries, numeric
# root ownership, so the same busybox gives the same digests. Cached: rebuilt only when the
# busybox binary or this script change (key stored next to OUT).
#
# Contents: /bin/busybox + every applet as a symlink to it, /etc/passwd and /etc/group with
# root and a non-root user `kata` (1000:1000), /tmp (1777), /root, /home/kata, empty /proc
# /sys /dev /run mount points, Debian's `/var/run -> /run` (absolute) and `/var/escape ->
# ../../../../../../../../tmp` (climbs out of the root unless resolved inside it: the parity
# cases mount under both). Config: Cmd ["sh"], PATH set, linux/amd64.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
OUT=${1:-$TOP/target/tests/busybox-oci.tar}
NAME=kata-rs.local/busybox:latest
BUSYBOX=/bin/busybox
EPOCH=${SOURCE_DATE_EPOCH:-0}

die() { echo "tests/image/build.sh: error: $*" >&2; exit 1; }
for t in tar sha256sum jq; do command -v $t >/dev/null || die "$t missing (scripts/install-deps.sh)"; done
[[ -x $BUSYBOX ]] || die "$BUSYBOX missing: apt-get install busybox-static"
! ldd "$BUSYBOX" 2>/dev/null | grep -q '=>' || die "$BUSYBOX is dynamically linked: apt-get install busybox-static"

KEY=$({ echo "$NAME $EPOCH"; sha256sum < "$BUSYBOX"; sha256sum < "${BASH_SOURCE[0]}"; } | sha256sum | cut -c1-16)
if [[ -s $OUT && -f $OUT.key && $(cat "$OUT.key") == "$KEY" ]]; then
    echo "image: $NAME cached ($OUT)"
    exit 0
fi

W=$(mktemp -d)
trap 'rm -rf -- "$W"' EXIT
R=$W/rootfs
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,home/kata,proc,sys,dev,run,var/tmp}
chmod 1777 "$R/tmp" "$R/var/tmp"; chmod 0700 "$R/root"
cp "$BUSYBOX" "$R/bin/busybox"
# --list-full prints e.g. "usr/bin/wc"; link every applet to /bin/busybox.
"$BUSYBOX" --list-full | while IFS= read -r a; do
    [[ $a == */* && $a != bin/busybox && ! -e $R/$a ]] || continue   # skips "linuxrc"
    mkdir -p "$R/${a%/*}"; ln -s /bin/busybox "$R/$a"
done
printf 'root:x:0:0:root:/root:/bin/sh\nkata:x:1000:1000:kata-rs test user:/home/kata:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$R/etc/passwd"
printf 'root:x:0:\nkata:x:1000:\nnogroup:x:65534:\n' > "$R/etc/group"
echo kata-rs-test > "$R/etc/hostname"
ln -s /run "$R/var/run"
ln -s ../../../../../../../../tmp "$R/var/escape"

# Layer: uncompressed tar, sorted, fixed mtime, root-owned except /home/kata.
tar --sort=name --mtime="@$EPOCH" --numeric-owner --owner=0 --group=0 --format=gnu \
    --exclude=./home/kata -C "$R" -cf "$W/layer-root.tar" .
tar --sort=name --mtime="@$EPOCH" --numeric-owner --owner=1000 --group=1000 --format=gnu \
    -C "$R" -cf "$W/layer-home.tar" ./home/kata
# One tar: concatenate (drop the first one's end-of-archive blocks via --concatenate).
cp "$W/layer-root.tar" "$W/layer.tar"
tar --concatenate -f "$W/layer.tar" "$W/layer-home.tar"

B=$W/oci/blobs/sha256
mkdir -p "$B"
blob() {  # file -> prints digest, copies into blobs
    local d; d=$(sha256sum < "$1" | cut -d' ' -f1); cp "$1" "$B/$d"; echo "$d"
}
LAYER=$(blob "$W/layer.tar"); LAYER_SIZE=$(stat -c %s "$W/layer.tar")
CREATED=$(date -u -d "@$EPOCH" +%Y-%m-%dT%H:%M:%SZ)
jq -cn --arg diff "sha256:$LAYER" --arg created "$CREATED" '{
    created: $created, architecture: "amd64", os: "linux",
    config: { Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
              Cmd: ["sh"], WorkingDir: "/" },
    rootfs: { type: "layers", diff_ids: [$diff] },
    history: [ { created: $created, created_by: "kata-rs tests/image/build.sh (busybox-static)" } ] }' \
    > "$W/config.json"
CONFIG=$(blob "$W/config.json"); CONFIG_SIZE=$(stat -c %s "$W/config.json")
jq -cn --arg c "sha256:$CONFIG" --argjson cs "$CONFIG_SIZE" --arg l "sha256:$LAYER" --argjson ls "$LAYER_SIZE" '{
    schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: $c, size: $cs },
    layers: [ { mediaType: "application/vnd.oci.image.layer.v1.tar", digest: $l, size: $ls } ] }' \
    > "$W/manifest.json"
MANIFEST=$(blob "$W/manifest.json"); MANIFEST_SIZE=$(stat -c %s "$W/manifest.json")
jq -cn --arg m "sha256:$MANIFEST" --argjson ms "$MANIFEST_SIZE" --arg name "$NAME" '{
    schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
    manifests: [ { mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $m, size: $ms,
                   platform: { architecture: "amd64", os: "linux" },
                   annotations: { "io.containerd.image.name": $name,
                                  "org.opencontainers.image.ref.name": "latest" } } ] }' \
    > "$W/oci/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' > "$W/oci/oci-layout"
find "$W/oci" -exec touch -h -d "@$EPOCH" {} +

mkdir -p "$(dirname "$OUT")"
tar --sort=name --mtime="@$EPOCH" --numeric-owner --owner=0 --group=0 --format=gnu \
    -C "$W/oci" -cf "$OUT.tmp" oci-layout index.json blobs
mv -f "$OUT.tmp" "$OUT"
echo "$KEY" > "$OUT.key"
echo "image: $NAME -> $OUT (manifest sha256:${MANIFEST:0:12}, $(du -h "$OUT" | cut -f1))"
