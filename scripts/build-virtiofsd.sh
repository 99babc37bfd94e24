#!/usr/bin/env bash
# Builds the virtio-fs file server kata-rs runs per sandbox: the Rust virtiofsd from
# crates.io (virtio-fs project, the daemon Kata Containers ships), with its own Cargo.lock.
#
#   scripts/build-virtiofsd.sh [OUT_DIR]        (default OUT_DIR: target/release)
#
# Result: OUT_DIR/virtiofsd. Cached under $KATA_RS_CACHE/virtiofsd/<version>, so it is
# built once per machine (~3 min on 2 cores). Needs libseccomp-dev and libcap-ng-dev
# (scripts/install-deps.sh).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
OUT=${1:-$TOP/target/release}
CACHE=${KATA_RS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kata-rs}
VERSION=1.14.0
DEST=$CACHE/virtiofsd/$VERSION

die() { echo "scripts/build-virtiofsd.sh: error: $*" >&2; exit 1; }
if [[ ! -x $DEST/bin/virtiofsd ]]; then
    command -v cargo >/dev/null || die "cargo not found"
    pkg-config --exists libseccomp libcap-ng 2>/dev/null \
        || die "libseccomp-dev and libcap-ng-dev are needed (scripts/install-deps.sh)"
    echo "virtiofsd: building $VERSION from crates.io (cached in $DEST)"
    T0=$(date +%s)
    cargo install --quiet --locked --version "$VERSION" --root "$DEST.tmp" virtiofsd \
        || die "cargo install virtiofsd $VERSION failed"
    rm -rf "$DEST"; mv "$DEST.tmp" "$DEST"
    echo "virtiofsd: built in $(( $(date +%s) - T0 ))s"
fi
mkdir -p "$OUT"
cp -f "$DEST/bin/virtiofsd" "$OUT/virtiofsd"
echo "virtiofsd: $("$OUT/virtiofsd" --version 2>/dev/null | head -1) -> $OUT/virtiofsd"
