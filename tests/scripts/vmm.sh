# VMM only (no containerd, no shim): boot the installed guest kernel + image with kata-vmm,
# wait for the agent's ready line, show the VMM's jail from /proc while the guest runs, talk
# to the agent with kata-agent-ctl, shut it down, and check kata-vmm exits 0. Then the same
# with the guest kernel as a bzImage when one is given (second argument; the test passes
# target/guest/bzImage through KATA_RS_NODE_EXTRA). Markers are checked by tests/tests/vmm.rs.
CID=${1:-42}
BZIMAGE=${2:-}
t0=$(kata_rs_uptime)
secs() { awk -v a="$t0" -v b="$(kata_rs_uptime)" 'BEGIN { printf "%.1f", b - a }'; }

# boot_agent PREFIX KERNEL CID: markers PREFIX-agent-ready, PREFIX-check-rc, PREFIX-shutdown-rc,
# PREFIX-rc; with PREFIX "vmm" also the jail-* lines.
boot_agent() {
    _p=$1 _log=$KATA_RS_WORK/$1-console.log _out=$KATA_RS_WORK/$1.out
    _uds=$KATA_RS_WORK/$1.vsock
    : > "$_log"
    kata-vmm --kernel "$2" --initrd "$KATA_RS_SHARE/kata-rs-initrd.img" \
        --mem-mib 256 --vcpus 2 --vsock-cid "$3" --vsock-uds "$_uds" --console-log "$_log" \
        > "$_out" 2>&1 &
    VPID=$!
    ready=no i=0
    while [ $i -lt 1800 ]; do           # 180 s: an emulated node boots the microVM in 5-30 s
        if grep -q 'kata-rs-agent: ready' "$_log" 2>/dev/null; then ready=yes; break; fi
        kill -0 $VPID 2>/dev/null || break
        sleep 0.1; i=$((i + 1))
    done
    echo "$_p-agent-ready=$ready after $(secs) s"
    if [ "$_p" = vmm ]; then
        echo "== jail"
        # The main thread's view (its status is the process's), then every thread's.
        grep -E '^(Uid|Gid|Groups|NoNewPrivs|Seccomp|CapInh|CapPrm|CapEff|CapBnd|CapAmb|Threads):' \
            "/proc/$VPID/status" | tr '\t' ' ' | sed 's/^/jail-status| /'
        for t in /proc/$VPID/task/*; do
            echo "$(cat "$t/comm") $(grep -E '^(Uid|Gid|NoNewPrivs|Seccomp|CapEff):' "$t/status" | tr '\t\n' '  ')"
        done | sed 's/^/jail-task| /'
        echo "jail-root-entries=$(ls -A "/proc/$VPID/root/" | wc -l)"
        ls -la "/proc/$VPID/root/" | sed 's/^/jail-root| /'
        sed 's/^/jail-mountinfo| /' "/proc/$VPID/mountinfo"
        echo "jail-mounts=$(wc -l < "/proc/$VPID/mountinfo")"
        same=""
        for ns in mnt net ipc uts cgroup pid user; do
            [ "$(readlink "/proc/$VPID/ns/$ns")" = "$(readlink /proc/self/ns/$ns)" ] && same="$same $ns"
        done
        echo "jail-shared-ns=$(echo $same | tr ' ' ,)"
        echo "== hybrid vsock"
        # The host side is the Unix socket (root's, 0600); no /dev/vhost-vsock is open.
        echo "vsock-sock-mode=$(ls -l "$_uds" | cut -c1-10)"
        echo "vsock-sock-owner=$(stat -c %u "$_uds")"
        echo "vhost-vsock-fds=$(ls -l /proc/$VPID/fd | grep -c vhost-vsock)"
    fi
    timeout 120 kata-agent-ctl --uds "$_uds" check
    echo "$_p-check-rc=$?"
    timeout 120 kata-agent-ctl --uds "$_uds" shutdown
    echo "$_p-shutdown-rc=$?"
    kata_rs_wait_exit $VPID 60 "$_p-rc"
    rm -f "$_uds"
    echo "$_p-total=$(secs) s"
    sed "s/^/$_p-stderr| /" "$_out"
    tail -n 20 "$_log" | sed "s/^/$_p-console| /"
}

boot_agent vmm "$KATA_RS_SHARE/vmlinux" "$CID"
if [ -n "$BZIMAGE" ]; then
    echo "== bzimage"
    boot_agent bz "$KATA_RS_PAYLOAD/extra$BZIMAGE" $((CID + 1))
fi
kata_rs_leftovers
echo "leftovers-rc=$?"
