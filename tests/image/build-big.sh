#!/usr/bin/env bash
# Builds `kata-rs.local/big:latest`: the test image (tests/image/build.sh) plus one layer with
# a 200 MiB file of pseudo-random bytes (/big/blob: AES-128-CTR of zeros under a fixed key, so
# it does not compress away and the archive is reproducible), as an OCI image-layout archive
# beside the busybox one. `make bench` starts it against busybox (benches/README.md).
#
#   tests/image/build-big.sh [OUT]        (default OUT: target/tests/big-oci.tar)
#
# Cached: rebuilt only when the busybox archive or this script change (key next to OUT).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
OUT=${1:-$TOP/target/tests/big-oci.tar}
BASE=$TOP/target/tests/busybox-oci.tar
NAME=kata-rs.local/big:latest
MIB=200
EPOCH=${SOURCE_DATE_EPOCH:-0}

die() { echo "tests/image/build-big.sh: error: $*" >&2; exit 1; }
for t in tar sha256sum jq openssl; do command -v $t >/dev/null || die "$t missing (scripts/install-deps.sh)"; done
"$HERE/build.sh" "$BASE" > /dev/null || die "tests/image/build.sh failed"

KEY=$({ echo "$NAME $MIB $EPOCH"; cat "$BASE.key"; sha256sum < "${BASH_SOURCE[0]}"; } | sha256sum | cut -c1-16)
if [[ -s $OUT && -f $OUT.key && $(cat "$OUT.key") == "$KEY" ]]; then
    echo "image: $NAME cached ($OUT)"
    exit 0
fi

W=$(mktemp -d)
trap 'rm -rf -- "$W"' EXIT
mkdir -p "$W/base" "$W/layer/big"
tar -xf "$BASE" -C "$W/base"
B=$W/base/blobs/sha256
MANIFEST=$(jq -r '.manifests[0].digest | sub("^sha256:"; "")' "$W/base/index.json")
CONFIG=$(jq -r '.config.digest | sub("^sha256:"; "")' "$B/$MANIFEST")

# The big layer: /big/blob, pseudo-random, uncompressed tar like the base layer.
openssl enc -aes-128-ctr -nosalt -K 6b6174612d72732d6269672d696d6167 -iv 00000000000000000000000000000000 \
    -in /dev/zero 2>/dev/null | head -c $((MIB * 1024 * 1024)) > "$W/layer/big/blob" || true   # (openssl: SIGPIPE)
[[ $(stat -c %s "$W/layer/big/blob") == $((MIB * 1024 * 1024)) ]] || die "could not generate /big/blob"
tar --sort=name --mtime="@$EPOCH" --numeric-owner --owner=0 --group=0 --format=gnu \
    -C "$W/layer" -cf "$W/big-layer.tar" ./big
blob() { local d; d=$(sha256sum < "$1" | cut -d' ' -f1); cp "$1" "$B/$d"; echo "$d"; }
LAYER=$(blob "$W/big-layer.tar"); LAYER_SIZE=$(stat -c %s "$W/big-layer.tar")

CREATED=$(date -u -d "@$EPOCH" +%Y-%m-%dT%H:%M:%SZ)
jq -c --arg diff "sha256:$LAYER" --arg created "$CREATED" \
    '.rootfs.diff_ids += [$diff] | .history += [{created: $created, created_by: "kata-rs tests/image/build-big.sh (200 MiB /big/blob)"}]' \
    "$B/$CONFIG" > "$W/config.json"
NCONFIG=$(blob "$W/config.json"); NCONFIG_SIZE=$(stat -c %s "$W/config.json")
jq -c --arg c "sha256:$NCONFIG" --argjson cs "$NCONFIG_SIZE" --arg l "sha256:$LAYER" --argjson ls "$LAYER_SIZE" \
    '.config.digest = $c | .config.size = $cs
     | .layers += [{mediaType: "application/vnd.oci.image.layer.v1.tar", digest: $l, size: $ls}]' \
    "$B/$MANIFEST" > "$W/manifest.json"
NMANIFEST=$(blob "$W/manifest.json"); NMANIFEST_SIZE=$(stat -c %s "$W/manifest.json")
rm -f "$B/$MANIFEST" "$B/$CONFIG"
jq -c --arg m "sha256:$NMANIFEST" --argjson ms "$NMANIFEST_SIZE" --arg name "$NAME" \
    '.manifests[0].digest = $m | .manifests[0].size = $ms
     | .manifests[0].annotations["io.containerd.image.name"] = $name' \
    "$W/base/index.json" > "$W/index.json"
mv "$W/index.json" "$W/base/index.json"
find "$W/base" -exec touch -h -d "@$EPOCH" {} +

mkdir -p "$(dirname "$OUT")"
tar --sort=name --mtime="@$EPOCH" --numeric-owner --owner=0 --group=0 --format=gnu \
    -C "$W/base" -cf "$OUT.tmp" oci-layout index.json blobs
mv -f "$OUT.tmp" "$OUT"
echo "$KEY" > "$OUT.key"
echo "image: $NAME -> $OUT (manifest sha256:${NMANIFEST:0:12}, $(du -h "$OUT" | cut -f1))"
