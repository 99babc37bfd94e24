#!/usr/bin/env bash
# Reproduces the figures of docs/storage-choice.md: virtiofsd (a separate sandboxed process
# per pod, what kata-rs runs) against fuse-backend-rs's PassthroughFs (an in-process file
# server, what Dragonball runs inside its VMM), on this machine, no VM needed.
#
#   sudo benches/fs-compare/run.sh       (root: FUSE mounts, virtiofsd's namespace sandbox)
#
# Env: RUNS_FUSE (default 5) runs of the in-process server, RUNS_VFSD (default 10) starts of
# each virtiofsd variant, CONCURRENT (default 8) virtiofsd instances at once,
# VIRTIOFSD (default target/release/virtiofsd, built by scripts/build-virtiofsd.sh if
# missing), KATA_VMM (optional: a release kata-vmm, for the binary-size context).
# Output: stdout and benches/fs-compare/target/results.txt. ~2 min on 2 cores.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
RUNS_FUSE=${RUNS_FUSE:-5}
RUNS_VFSD=${RUNS_VFSD:-10}
CONCURRENT=${CONCURRENT:-8}
VIRTIOFSD=${VIRTIOFSD:-$TOP/target/release/virtiofsd}
OUT=$HERE/target/results.txt

die() { echo "benches/fs-compare/run.sh: error: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "needs root (FUSE mount, virtiofsd --sandbox namespace)"
[[ -c /dev/fuse ]] || die "no /dev/fuse (modprobe fuse)"
command -v tar >/dev/null || die "tar not found"
if [[ ! -x $VIRTIOFSD ]]; then
    "$TOP/scripts/build-virtiofsd.sh"
fi

export CARGO_TARGET_DIR=$HERE/target
cd "$HERE"
# The harness alone, then with fuse-backend-rs: the difference is what the server adds.
cargo build --quiet --release --locked --no-default-features
cp -f target/release/fs-compare target/fs-compare-without-server
cargo build --quiet --release --locked
BIN=$HERE/target/release/fs-compare
cp -f "$BIN" target/fs-compare-with-server

WORK=$(mktemp -d /var/tmp/fs-compare.XXXXXX)
cleanup() {
    # A mount left by a failed run, then the data.
    grep -q " $WORK/mnt " /proc/self/mountinfo && umount -l "$WORK/mnt"
    rm -rf "$WORK"
}
trap cleanup EXIT

size() { stat -c %s "$1"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.2f MiB", b / 1048576 }'; }
{
    echo "== machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'),"\
         "$(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"\
         "RAM, Linux $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "== $(date -u +%FT%TZ), $(cargo --version), $("$VIRTIOFSD" --version | head -1)," \
         "fuse-backend-rs $(grep -A1 '^name = "fuse-backend-rs"' Cargo.lock | sed -n 's/version = "\(.*\)"/\1/p')"
    A=$(size target/fs-compare-without-server); B=$(size target/fs-compare-with-server)
    echo "== binary size (release, lto thin, strip debuginfo)"
    echo "harness without server: $(mib "$A"); with fuse-backend-rs PassthroughFs: $(mib "$B");" \
         "added: $(mib $((B - A)))"
    echo "virtiofsd: $(mib "$(size "$VIRTIOFSD")")"
    if [[ -n ${KATA_VMM:-} && -x $KATA_VMM ]]; then
        echo "kata-vmm: $(mib "$(size "$KATA_VMM")")"
    fi
    echo "== crate coupling (cargo tree --features coupling -d: vm-memory/virtio-queue as kata-vmm pins them)"
    cargo tree --quiet --locked --features coupling -e normal -d \
        | grep -E '^(vm-memory|virtio-queue)' || echo "(unified)"
    "$BIN" virtiofsd "$VIRTIOFSD" "$WORK" "$RUNS_VFSD" "$CONCURRENT"
    "$BIN" passthrough "$WORK" "$RUNS_FUSE" 1
    echo "== load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
} 2>&1 | tee "$OUT"
echo "benches/fs-compare/run.sh: results in $OUT"
