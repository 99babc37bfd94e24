#!/usr/bin/env bash
# Builds the kata-rs guest image: a newc cpio initramfs whose /init is the static agent.
#
#   guest-image/build.sh [OUT_DIR]          (default OUT_DIR: target/guest)
#
# Result: OUT_DIR/initrd.img (uncompressed newc cpio). The archive is written by this
# script itself (no `cpio -o`), so device nodes need no root, and it is reproducible
# (fixed inode numbers, owners and mtimes): same agent binary, same bytes.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
OUT=${1:-$TOP/target/guest}
TARGET=x86_64-unknown-linux-musl

die() { echo "guest-image/build.sh: error: $*" >&2; exit 1; }
command -v cargo >/dev/null || die "cargo not found"
rustup target list --installed 2>/dev/null | grep -qx "$TARGET" \
    || die "rust target $TARGET missing (scripts/install-deps.sh)"

cd "$TOP"
cargo build --quiet --release -p kata-rs-agent --bin kata-agent --target "$TARGET" \
    || die "cargo build of the agent failed"
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps 2>/dev/null \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
AGENT=${TARGET_DIR:-$TOP/target}/$TARGET/release/kata-agent
[[ -x $AGENT ]] || die "agent build failed: $AGENT not found"
if file "$AGENT" 2>/dev/null | grep -q 'dynamically linked'; then
    die "$AGENT is dynamically linked; it must be static"
fi

mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
INIT=$WORK/init
cp "$AGENT" "$INIT"
# Symbols are not needed at run time; a smaller image loads faster into every VM.
if command -v strip >/dev/null; then strip --strip-all "$INIT" 2>/dev/null || cp "$AGENT" "$INIT"; fi

# --- newc writer --------------------------------------------------------------------
ino=721
pad4() { local r=$(( $1 % 4 )); if (( r )); then head -c $(( 4 - r )) /dev/zero; fi; }
# entry NAME MODE SIZE [RDEV_MAJOR RDEV_MINOR]
entry() {
    local name=$1 mode=$2 size=$3 rmaj=${4:-0} rmin=${5:-0} nlink=1
    (( (mode & 0170000) == 0040000 )) && nlink=2
    ino=$(( ino + 1 ))
    local namesize=$(( ${#name} + 1 ))
    printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
        "$ino" "$mode" 0 0 "$nlink" 0 "$size" 0 0 "$rmaj" "$rmin" "$namesize" 0
    printf '%s\0' "$name"
    pad4 $(( 110 + namesize ))
}
dir()  { entry "$1" $(( 0040000 | $2 )) 0; }
node() { entry "$1" $(( 0020000 | $2 )) 0 "$3" "$4"; }
file() {
    local size; size=$(stat -c %s "$3")
    entry "$1" $(( 0100000 | $2 )) "$size"
    cat "$3"
    pad4 "$size"
}

{
    for d in dev proc sys run run/kata-rs run/kata-rs/containers etc root; do dir "$d" 0755; done
    dir tmp 01777
    # The kernel opens /dev/console for init's stdio before /init runs (devtmpfs is not
    # mounted yet), so the node must be in the archive.
    node dev/console 0600 5 1
    node dev/null 0666 1 3
    file init 0755 "$INIT"
    entry 'TRAILER!!!' 0 0
} > "$WORK/initrd.img"
mv "$WORK/initrd.img" "$OUT/initrd.img"
echo "guest-image: $OUT/initrd.img ($(stat -c %s "$OUT/initrd.img") bytes, agent $(stat -c %s "$INIT") bytes)"
