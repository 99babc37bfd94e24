# VMM only (no containerd, no shim): boot the installed guest kernel + image with kata-vmm,
# wait for the agent's ready line, talk to it with kata-agent-ctl, shut it down, and check
# kata-vmm exits 0. Markers are checked by tests/tests/vmm.rs.
CID=${1:-42}
LOG=$KATA_RS_WORK/vmm-console.log
: > "$LOG"
t0=$(kata_rs_uptime)
secs() { awk -v a="$t0" -v b="$(kata_rs_uptime)" 'BEGIN { printf "%.1f", b - a }'; }
kata-vmm --kernel "$KATA_RS_SHARE/vmlinux" --initrd "$KATA_RS_SHARE/kata-rs-initrd.img" \
    --mem-mib 256 --vcpus 1 --vsock-cid "$CID" --console-log "$LOG" > "$KATA_RS_WORK/vmm.out" 2>&1 &
VPID=$!
ready=no i=0
while [ $i -lt 1800 ]; do           # 180 s: an emulated node boots the microVM in 5-30 s
    if grep -q 'kata-rs-agent: ready' "$LOG" 2>/dev/null; then ready=yes; break; fi
    kill -0 $VPID 2>/dev/null || break
    sleep 0.1; i=$((i + 1))
done
echo "agent-ready=$ready after $(secs) s"
timeout 120 kata-agent-ctl --cid "$CID" check
echo "check-rc=$?"
timeout 120 kata-agent-ctl --cid "$CID" shutdown
echo "shutdown-rc=$?"
i=0
while kill -0 $VPID 2>/dev/null && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
if kill -0 $VPID 2>/dev/null; then
    echo "vmm-rc=still-running"; kill -KILL $VPID
else
    wait $VPID; echo "vmm-rc=$?"
fi
echo "vmm-total=$(secs) s"
sed 's/^/vmm-stderr| /' "$KATA_RS_WORK/vmm.out"
tail -n 20 "$LOG" | sed 's/^/console| /'
kata_rs_leftovers
echo "leftovers-rc=$?"
