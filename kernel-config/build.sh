#!/usr/bin/env bash
# Builds the kata-rs guest kernel from Debian's linux-source package with our fragment.
#
#   kernel-config/build.sh [OUT_DIR]      (default OUT_DIR: target/guest)
#
# Result: OUT_DIR/vmlinux (ELF with PVH entry, what kata-vmm boots), OUT_DIR/bzImage,
# OUT_DIR/kernel.config. Cached under $KATA_RS_CACHE/kernel/<key>, key = source package
# version + fragment + this script, so a rebuild only happens when one of them changes.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$HERE/.." && pwd)
OUT=${1:-$TOP/target/guest}
CACHE=${KATA_RS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kata-rs}
PKG=linux-source-6.1
TARBALL=/usr/src/$PKG.tar.xz
FRAGMENT=$HERE/kata-rs.config

die() { echo "kernel-config/build.sh: error: $*" >&2; exit 1; }
[[ -r $TARBALL ]] || die "$TARBALL not found: install Debian package $PKG (scripts/install-deps.sh)"
PKGVER=$(dpkg-query -W -f='${Version}' "$PKG" 2>/dev/null) || die "package $PKG is not installed"
KEY=$( { echo "$PKG $PKGVER"; cat "$FRAGMENT" "$HERE/build.sh"; } | sha256sum | cut -c1-16)
DEST=$CACHE/kernel/$KEY

if [[ ! -s $DEST/vmlinux ]]; then
    echo "kernel: building $PKG $PKGVER with kata-rs.config (cache key $KEY); ~4 min on 2 cores"
    T0=$(date +%s)
    WORK=$CACHE/kernel/build-$KEY
    rm -rf "$WORK"; mkdir -p "$WORK"
    tar -xf "$TARBALL" -C "$WORK" --strip-components=1
    cd "$WORK"
    # One pass over tinyconfig's own fragments plus ours, on top of allnoconfig (-n): merging
    # after `make tinyconfig` lets hidden options take their defaults and drags in drivers.
    scripts/kconfig/merge_config.sh -n -m kernel/configs/tiny-base.config kernel/configs/tiny.config \
        arch/x86/configs/tiny.config "$FRAGMENT" > merge.log 2>&1 || { cat merge.log; die "merge_config failed"; }
    make -s olddefconfig > olddefconfig.log 2>&1 || { cat olddefconfig.log; die "olddefconfig failed"; }
    # Options vanish silently when a dependency is missing: check every wanted value survived.
    missing=0
    while IFS= read -r line; do
        opt=${line%%=*}
        if [[ $line == *=n ]]; then
            ! grep -qE "^$opt=[ym]" .config || { echo "kernel: wanted off but on: $opt" >&2; missing=1; }
        else
            grep -qxF "$line" .config || { echo "kernel: option dropped by olddefconfig: $line (got: $(grep -E "^(# )?$opt[= ]" .config || echo unset))" >&2; missing=1; }
        fi
    done < <(grep -E '^CONFIG_' "$FRAGMENT")
    ((missing == 0)) || die "the fragment's options did not all survive; fix kernel-config/kata-rs.config"
    make -s -j"$(nproc)" vmlinux bzImage > build.log 2>&1 || { tail -n 40 build.log; die "kernel build failed (log: $WORK/build.log)"; }
    mkdir -p "$DEST.tmp"
    cp vmlinux "$DEST.tmp/vmlinux"
    cp arch/x86/boot/bzImage "$DEST.tmp/bzImage"
    cp .config "$DEST.tmp/kernel.config"
    make -s kernelrelease > "$DEST.tmp/release"
    rm -rf "$DEST"; mv "$DEST.tmp" "$DEST"
    cd /; rm -rf "$WORK"
    echo "kernel: built $(cat "$DEST/release") in $(( $(date +%s) - T0 ))s"
fi
mkdir -p "$OUT"
for f in vmlinux bzImage kernel.config release; do cp -f "$DEST/$f" "$OUT/$f"; done
echo "kernel: $(cat "$OUT/release") -> $OUT/vmlinux"
