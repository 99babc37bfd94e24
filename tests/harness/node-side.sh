#!/bin/sh
# Runs on the node (inside the emulated node VM, or natively inside a private mount + PID
# namespace made by tests/node-run): installs kata-rs per docs/design.md's layout, starts a
# private containerd, imports the test image, runs the test script, cleans up.
# POSIX sh (busybox ash in the node VM, dash natively).
#
# Environment (set by node-run / node-init.sh):
#   KATA_RS_NODE_KIND  native | emulated
#   KATA_RS_PAYLOAD    directory with bin/ guest/ image/ harness/ script/ run.env
#   KATA_RS_WORK       private directory for containerd's root/state/socket and logs
# Exit status: the script's, or 125 when the node setup itself failed.
set -u
P=$KATA_RS_PAYLOAD
W=$KATA_RS_WORK
. "$P/run.env"              # KATA_RS_SCRIPT_NAME, KATA_RS_NODE_REASON, set -- ARGS
. "$P/harness/paths.sh"     # KATA_RS_VMM_BIN (scripts/paths.sh)
KIND=$KATA_RS_NODE_KIND

up() { cut -d' ' -f1 /proc/uptime; }
since() { awk -v a="$1" -v b="$(up)" 'BEGIN { printf "%.1f", b - a }'; }
log() { echo "node-run: $*" >&2; }
T_START=$(up)

show_logs() {
    [ -s "$W/containerd.log" ] || return 0
    log "last lines of the containerd log ($W/containerd.log):"
    grep -v 'msg="loading plugin' "$W/containerd.log" | tail -n "${1:-40}" | sed 's/^/  containerd| /' >&2
}
setup_fail() { log "node setup failed: $*"; show_logs; cleanup; exit 125; }

export CONTAINERD_ADDRESS="$W/containerd.sock" CONTAINERD_NAMESPACE=kata-rs-test
CPID=
cleanup() {
    # Orderly first (so shims and VMMs get to clean up), then by force.
    if [ -n "$CPID" ] && kill -0 "$CPID" 2>/dev/null; then
        for t in $(timeout 30 ctr task ls -q 2>/dev/null); do
            timeout 30 ctr task kill -s KILL "$t" >/dev/null 2>&1
            timeout 60 ctr task delete -f "$t" >/dev/null 2>&1
        done
        for c in $(timeout 30 ctr container ls -q 2>/dev/null); do timeout 30 ctr container rm "$c" >/dev/null 2>&1; done
        kill -TERM "$CPID" 2>/dev/null
        i=0; while kill -0 "$CPID" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        kill -KILL "$CPID" 2>/dev/null
    fi
    CPID=
    if [ "$KIND" = native ]; then
        # We are PID 1 of a private PID namespace: whatever is left (shims, VMMs) dies here,
        # the namespace's mounts go away with it. Empty cgroups ctr/runc made are removed.
        kill -KILL -1 2>/dev/null
        sleep 0.2
        for g in $(find /sys/fs/cgroup -mindepth 1 -maxdepth 2 -type d -name "$CONTAINERD_NAMESPACE" 2>/dev/null); do
            find "$g" -depth -type d -exec rmdir {} \; 2>/dev/null
        done
    fi
}
trap 'cleanup; exit 130' INT TERM

# ---------------------------------------------------------------- private mounts (native only)
if [ "$KIND" = native ]; then
    # Private mount namespace (node-run did "unshare --mount --pid"): the install layout goes on
    # overlays whose upper dirs live in $W, so the host's /etc and /usr/local are never written;
    # /run is a fresh tmpfs (no system containerd socket, /run/kata-rs private).
    for d in etc usr/local; do
        n=$(echo "$d" | tr / -)
        mkdir -p "$W/ovl/$n/up" "$W/ovl/$n/wk"
        mount -t overlay knode-$n -o "lowerdir=/$d,upperdir=$W/ovl/$n/up,workdir=$W/ovl/$n/wk" "/$d" \
            || setup_fail "cannot put an overlay on /$d"
    done
    mount -t tmpfs -o mode=0755 knode-run /run || setup_fail "cannot mount tmpfs on /run"
    mount -t proc proc /proc || setup_fail "cannot mount /proc"
fi
mkdir -p "$W"
export PATH="/usr/local/sbin:/usr/local/bin:$P/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# ---------------------------------------------------------------- kernel modules (native only)
if [ "$KIND" = native ]; then
    [ -c /dev/vhost-vsock ] || modprobe vhost_vsock 2>/dev/null || log "warning: no /dev/vhost-vsock (modprobe vhost_vsock failed)"
    grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || log "warning: no overlay file system (modprobe overlay failed)"
fi

# ---------------------------------------------------------------- install layout (docs/design.md)
mkdir -p /usr/local/bin /usr/local/libexec/kata-rs /usr/local/share/kata-rs /usr/local/share/kata-rs-tests /etc/kata-rs
missing=
for b in containerd-shim-kata-v2 kata-vmm kata-agent-ctl; do
    if [ -f "$P/bin/$b" ]; then cp "$P/bin/$b" /usr/local/bin/ || setup_fail "cannot install $b"
    elif [ $b = kata-vmm ]; then missing="$missing $KATA_RS_VMM_BIN"
    else missing="$missing target/release/$b"; fi
done
if [ -f "$P/bin/virtiofsd" ]; then cp "$P/bin/virtiofsd" /usr/local/libexec/kata-rs/virtiofsd || setup_fail "cannot install virtiofsd"
else missing="$missing target/release/virtiofsd"; fi
if [ -f "$P/guest/vmlinux" ]; then cp "$P/guest/vmlinux" /usr/local/share/kata-rs/vmlinux
else missing="$missing target/guest/vmlinux"; fi
if [ -f "$P/guest/initrd.img" ]; then cp "$P/guest/initrd.img" /usr/local/share/kata-rs/kata-rs-initrd.img
else missing="$missing target/guest/initrd.img"; fi
[ -z "$missing" ] || log "warning: not built, io.containerd.kata.v2 will not work:$missing"
cp "$P/guest/hang-initrd.img" /usr/local/share/kata-rs-tests/hang-initrd.img
cp "$P/harness/configuration.toml.in" /usr/local/share/kata-rs-tests/configuration.toml.in
# io.containerd.katabad.v2: the same shim with another configuration file (KATA_RS_BAD_CONFIG,
# default /etc/kata-rs/bad.toml), so tests can try broken configurations without restarting
# containerd.
cat > /usr/local/bin/containerd-shim-katabad-v2 <<'WRAP'
#!/bin/sh
export KATA_RS_CONFIG="${KATA_RS_BAD_CONFIG:-/etc/kata-rs/bad.toml}"
exec /usr/local/bin/containerd-shim-kata-v2 "$@"
WRAP
chmod 0755 /usr/local/bin/containerd-shim-katabad-v2

export KATA_RS_LIB="$P/harness/lib.sh"
. "$KATA_RS_LIB"
# Generous timeouts: under emulation a microVM boot takes 5-30 s.
kata_rs_config > /etc/kata-rs/configuration.toml
T_INSTALL=$(up)

# ---------------------------------------------------------------- containerd (private dirs)
cat > "$W/containerd.toml" <<TOML
version = 2
root = "$W/root"
state = "$W/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.internal.v1.tracing",
  "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$W/containerd.sock"
[ttrpc]
  address = "$W/containerd.sock.ttrpc"
[debug]
  address = ""
  level = "info"
[metrics]
  address = ""
TOML
export CONTAINERD_SNAPSHOTTER=overlayfs

containerd --config "$W/containerd.toml" > "$W/containerd.log" 2>&1 &
CPID=$!
i=0
until ctr version > /dev/null 2>&1; do
    kill -0 "$CPID" 2>/dev/null || setup_fail "containerd exited"
    i=$((i + 1)); [ $i -lt 600 ] || setup_fail "containerd did not answer within 60 s"
    sleep 0.1
done
T_CONTAINERD=$(up)
out=$(ctr image import "$P/image/busybox-oci.tar" 2>&1) || { echo "$out" >&2; setup_fail "ctr image import failed"; }
ctr image ls -q | grep -qx "$KATA_RS_IMAGE" || { ctr image ls >&2; setup_fail "ctr image ls does not show $KATA_RS_IMAGE"; }
T_IMAGE=$(up)
log "node ready: install $(awk -v a="$T_START" -v b="$T_INSTALL" 'BEGIN{printf "%.1f", b-a}') s," \
    "containerd $(awk -v a="$T_INSTALL" -v b="$T_CONTAINERD" 'BEGIN{printf "%.1f", b-a}') s," \
    "image import $(awk -v a="$T_CONTAINERD" -v b="$T_IMAGE" 'BEGIN{printf "%.1f", b-a}') s"

# ---------------------------------------------------------------- the script
mkdir -p "$W/scratch"
cd "$W/scratch"
export KATA_RS_NODE_KIND KATA_RS_NODE_REASON KATA_RS_WORK KATA_RS_PAYLOAD
export KATA_RS_CONTAINERD_LOG="$W/containerd.log"
T_SCRIPT=$(up)
sh -c '. "$KATA_RS_LIB"; . "$0"' "$P/script/$KATA_RS_SCRIPT_NAME" "$@" < /dev/null
RC=$?
log "script $KATA_RS_SCRIPT_NAME exited $RC after $(since "$T_SCRIPT") s"
[ $RC -eq 0 ] || show_logs 30
if [ "$KIND" = emulated ]; then     # (node-run: KFAIL_RE)
    kfail=$(dmesg 2>/dev/null | grep -m1 -E 'BUG:|Oops|Kernel panic|soft lockup|stack guard page')
    [ -z "$kfail" ] || log "node kernel failure (the emulated node's own kernel under QEMU TCG, not the script): $kfail"
fi
# A kata-vmm guest that triple faulted during the run (the shim logs the VMM's stderr to
# containerd's log, which scripts rarely print): said here, so that tests/src's rig-fault
# check sees it (on the emulated node, a known fault of QEMU TCG's nested SVM).
for f in "$W/containerd.log" "$W/cri/containerd.log" "$W/fresh-containerd.log"; do
    [ -f "$f" ] || continue
    grep -h 'guest stopped: triple fault' "$f" | head -n 3 | cut -c1-300 \
        | while read -r l; do log "kata-vmm in ${f##*/}: $l"; done
done
cd /
cleanup
exit $RC
