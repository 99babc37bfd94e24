# The VMM's control socket (--api-sock): boot the agent guest with 2 vCPUs, then over the
# socket: ping; pause (the agent must not answer while paused, the vCPU threads sleep in
# the kernel's futex wait instead of KVM_RUN); resume (the agent answers again); shut down.
# Then snapshot/restore (issue 14): pause, snapshot into a directory under --snapshot-root,
# stop the VMM, start a new kata-vmm with --restore from it: the restored guest's agent answers
# over the hybrid vsock socket; its time to answer against the cold boot's; a snapshot for
# another configuration, one whose memory file is cut short and one of another format
# version are refused with errors naming what differs. Templates (issue 14): the cold boot has
# two placeholder slots (DeviceID 0); the restore puts a second tap card into one of them
# (reset, unprobed); a third VMM restores with --fs into one, its guest RAM copied into memfds
# (--restore-memory copy: virtiofsd maps guest RAM itself; the default, map, forwards through a
# bounce area: tests/scripts/template.sh), virtiofsd answering the vhost-user handshake.
# The agent's AfterRestore (agent/examples/after-restore.rs) then binds the filled slot again
# and the guest's virtio-net driver probes the card there.
# $1: the vmm_api client (vmm/examples/vmm_api.rs), $2: virtiofsd, $3: the after-restore
# client (all given through KATA_RS_NODE_EXTRA). Markers are checked by tests/tests/vmm.rs.
API="$KATA_RS_PAYLOAD/extra$1"
VFSD="$KATA_RS_PAYLOAD/extra$2"
AFTER="$KATA_RS_PAYLOAD/extra$3"
CID=44
LOG=$KATA_RS_WORK/vmm-api-console.log
SOCK=$KATA_RS_WORK/vmm-api.sock
VSOCK=$KATA_RS_WORK/vmm-api.vsock
# Snapshots go below this directory; the jailed VMM (uid/gid 65534) writes there.
SNAPROOT=$KATA_RS_WORK/snapshots
mkdir -p "$SNAPROOT" && chown 65534:65534 "$SNAPROOT"
# The VM's configuration: the same for the cold boot and the restore; a small read-only disk
# and a network card on a tap the VMM creates, so that a virtio-blk device (its queue,
# served by its own thread) and a virtio-net device (the guest's driver brings it up; the
# agent image leaves eth0 unconfigured) are in the snapshot too.
DISK=$KATA_RS_WORK/vmm-api-disk.img
dd if=/dev/zero of="$DISK" bs=1M count=4 2>/dev/null
VM_ARGS="--kernel $KATA_RS_SHARE/vmlinux --initrd $KATA_RS_SHARE/kata-rs-initrd.img --mem-mib 256 --vcpus 2 --vsock-cid $CID --vsock-uds $VSOCK --api-sock $SOCK --snapshot-root $SNAPROOT --disk $DISK,ro --net tap=ktsnap0"
# Milliseconds of uptime (10 ms resolution).
ms() { awk '{ printf "%d", $1 * 1000 }' /proc/uptime; }
# first_check SECS [UDS]: polls the agent (CONNECT 1024 over the hybrid vsock socket UDS,
# default $VSOCK, then its Check RPC) until it answers; 0 when it did within SECS.
first_check() {
    _end=$(kata_rs_deadline "$1")
    while kata_rs_before "$_end"; do
        timeout 10 kata-agent-ctl --uds "${2:-$VSOCK}" check > /dev/null 2>&1 && return 0
        sleep 0.05
    done
    return 1
}
: > "$LOG"
T0=$(ms)
kata-vmm $VM_ARGS --placeholder-slots 2 --console-log "$LOG" > "$KATA_RS_WORK/vmm-api.out" 2>&1 &
VPID=$!
if kata_rs_wait_for "$LOG" 'kata-rs-agent: ready' 180; then echo "agent-ready=yes"; else echo "agent-ready=no"; fi
first_check 60; echo "cold-check-rc=$?"
echo "cold-boot-ms=$(( $(ms) - T0 ))"
echo "sock-mode=$(ls -l "$SOCK" | cut -c1-10)"
# api NAME COMMAND...: NAME=the replies, spaces as _ (ok_pong), and NAME-rc=the client's status.
api() {
    _n=$1; shift
    _out=$("$API" "$SOCK" "$@" 2>&1); _rc=$?
    echo "$_n=$(echo $_out | tr ' ' _)"; echo "$_n-rc=$_rc"
}
api api-ping ping
# vCPU threads: state and kernel wait channel.
vcpus() { for t in /proc/$VPID/task/*; do
    case $(cat "$t/comm") in vcpu*) echo "$(cat "$t/comm") $(cut -d' ' -f3 "$t/stat") $(cat "$t/wchan")";; esac
done; }
vcpus | sed 's/^/running-vcpu| /'

echo "== pause"
api api-pause pause state
vcpus | sed 's/^/paused-vcpu| /'
echo "paused-futex=$(vcpus | grep -c futex)"
timeout 8 kata-agent-ctl --uds "$KATA_RS_WORK/vmm-api.vsock" check > paused-check.out 2>&1
echo "paused-check-rc=$?"
sed 's/^/paused-check| /' paused-check.out

echo "== resume"
api api-resume resume state
timeout 120 kata-agent-ctl --uds "$KATA_RS_WORK/vmm-api.vsock" check
echo "resumed-check-rc=$?"
api api-bad frobnicate

echo "== snapshot"
SNAP=$SNAPROOT/s1
api api-snap-running snapshot "$SNAP"
api api-snap-pause pause
# Saved busy: a host connection is open (a check of the paused guest, accepted by the VMM, its
# request never answered), so a restore from s1 must reset vsock's transport.
timeout 30 kata-agent-ctl --uds "$VSOCK" check > busy-check.out 2>&1 &
BUSY=$!
sleep 1
api api-snap snapshot "$SNAP"
api api-snap-outside snapshot /tmp/elsewhere
ls -ls "$SNAP" | sed 's/^/snapshot-files| /'
echo "snap-memory-bytes=$(stat -c %s "$SNAP/memory")"
echo "snap-memory-disk-kib=$(du -k "$SNAP/memory" | cut -f1)"
kill -TERM $VPID
kata_rs_wait_exit $VPID 60 snap-vmm-rc
wait $BUSY 2>/dev/null
sed 's/^/vmm-stderr| /' "$KATA_RS_WORK/vmm-api.out"
rm -f "$SOCK"

echo "== refusals"
# refused NAME ARGS...: a kata-vmm that must not start; NAME-rc and its error line (spaces
# as _).
refused() {
    _n=$1; shift
    timeout 60 kata-vmm "$@" --console-log "$KATA_RS_WORK/refused.log" > "$KATA_RS_WORK/refused.out" 2>&1
    echo "$_n-rc=$?"
    echo "$_n-error=$(grep 'kata-vmm: error' "$KATA_RS_WORK/refused.out" | head -n 1 | tr ' ' _)"
}
refused restore-mem $(echo "$VM_ARGS" | sed 's/--mem-mib 256/--mem-mib 320/') --restore "$SNAP"
mkdir -p "$SNAPROOT/cut" "$SNAPROOT/v9"
cp "$SNAP/state" "$SNAPROOT/cut/state"
head -c 1048576 "$SNAP/memory" > "$SNAPROOT/cut/memory"
refused restore-cut $VM_ARGS --restore "$SNAPROOT/cut"
cp "$SNAP/state" "$SNAPROOT/v9/state"
printf '\011' | dd of="$SNAPROOT/v9/state" bs=1 seek=8 conv=notrunc 2>/dev/null
refused restore-version $VM_ARGS --restore "$SNAPROOT/v9"
head -c 100 "$SNAP/state" > "$SNAPROOT/v9/state"
refused restore-truncated $VM_ARGS --restore "$SNAPROOT/v9"
rm -rf "$SNAPROOT/cut" "$SNAPROOT/v9"

echo "== restore"
RLOG=$KATA_RS_WORK/vmm-api-restored.log
T0=$(ms)
# A second card on a new tap goes into the snapshot's first placeholder slot.
KATA_VMM_DEBUG=1 kata-vmm $VM_ARGS --net tap=ktfill0 --console-log "$RLOG" --restore "$SNAP" > "$KATA_RS_WORK/vmm-api-restored.out" 2>&1 &
VPID=$!
first_check 120; echo "restored-check-rc=$?"
echo "restore-ms=$(( $(ms) - T0 ))"
# The VMM's own part (state file to running vCPUs), and what one check of a running agent
# costs (process start, handshake, RPC): the rest of restore-ms.
echo "restore-vmm=$(grep -o 'VM restored in [^ ]*' "$KATA_RS_WORK/vmm-api-restored.out" | cut -d' ' -f4)"
# DeviceID/Status of each slot as the guest reads them (KATA_VMM_DEBUG line).
echo "restored-slots=$(sed -n 's/.*virtio-mmio slots (DeviceID\/Status): //p' "$KATA_RS_WORK/vmm-api-restored.out" | tr ' ' ,)"
api api-restored state
# The agent rebinds every unbound virtio-mmio platform device: slot 4 (the new card) gets the
# virtio-net driver, slot 5 (still DeviceID 0) stays unbound.
echo "after-restore=$(timeout 60 "$AFTER" "$VSOCK" --hostname restored1 2>&1 | tr ' ' _)"
# Not the first connection only: the muxer of the restored VMM serves new ones as before.
T0=$(ms)
timeout 120 kata-agent-ctl --uds "$VSOCK" check; echo "restored-check2-rc=$?"
echo "warm-check-ms=$(( $(ms) - T0 ))"
# The restored VM can be paused and saved again (a template of a template). Saved idle, as
# the shim saves a template (its Check connection closed 1 s before): no host connection
# open, so a restore from s2 needs no vsock transport reset. Saved again while the reply
# says busy (the check's connection still closing), at most 5 times.
i=0
while :; do
    sleep 1
    _out=$("$API" "$SOCK" pause snapshot "$SNAPROOT/s2" resume 2>&1)
    i=$((i + 1))
    case $_out in *"vsock busy"*) [ $i -lt 5 ] && continue;; esac
    break
done
echo "api-resnap=$(echo $_out | tr ' ' _)"; echo "api-resnap-tries=$i"
grep -c . "$RLOG" | sed 's/^/restored-console-lines=/'
tail -n 5 "$RLOG" | sed 's/^/restored-console| /'

echo "== second restore"
# A second VM from the same snapshot at once: guest RAM of both is the memory file mapped
# MAP_PRIVATE, so the pages neither wrote are one page-cache copy: each process's Pss (its
# share) is well below its Rss.
V2SOCK=$KATA_RS_WORK/vmm-api2.vsock
kata-vmm $(echo "$VM_ARGS" | sed "s|$VSOCK|$V2SOCK|; s|$SOCK|$KATA_RS_WORK/vmm-api2.sock|; s|ktsnap0|ktsnap1|") \
    --console-log "$KATA_RS_WORK/vmm-api2.log" --restore "$SNAP" > "$KATA_RS_WORK/vmm-api2.out" 2>&1 &
VPID2=$!
first_check 120 "$V2SOCK"; echo "second-check-rc=$?"
# rss_pss PID: "RSS PSS" in KiB.
rss_pss() { awk '/^Rss:/ { r = $2 } /^Pss:/ { p = $2 } END { print r, p }' "/proc/$1/smaps_rollup"; }
set -- $(rss_pss $VPID); echo "restored1-rss-kib=$1"; echo "restored1-pss-kib=$2"
set -- $(rss_pss $VPID2); echo "restored2-rss-kib=$1"; echo "restored2-pss-kib=$2"
timeout 120 kata-agent-ctl --uds "$V2SOCK" shutdown; echo "second-shutdown-rc=$?"
kata_rs_wait_exit $VPID2 60 second-vmm-rc
rm -f "$KATA_RS_WORK/vmm-api2.sock"

echo "== restore with --fs (memory copied)"
# virtiofsd serves a fresh share; the VMM restores with --fs into a placeholder slot, guest
# RAM in memfds the backend can map (the handshake is made before the jail, as at a boot).
# From s2, the snapshot of the restored VM (a template of a template: its second card, never
# probed, is now one of its own devices, so the share goes into its last placeholder). Not
# from s1: the node's work directory is a tmpfs, where the map restores' read faults (and
# saving s2 reads all guest RAM) filled s1's memory file's holes with pages.
S2=$SNAPROOT/s2
echo "s2-memory-disk-kib=$(du -k "$S2/memory" | cut -f1)"
FSW=$KATA_RS_WORK/vmm-api-fs; mkdir -p "$FSW/shared"
"$VFSD" --socket-path="$FSW/vfsd.sock" --shared-dir="$FSW/shared" --sandbox=namespace \
    --cache=auto > "$FSW/vfsd.log" 2>&1 &
FPID=$!
i=0; while [ $i -lt 300 ] && [ ! -S "$FSW/vfsd.sock" ]; do sleep 0.1; i=$((i + 1)); done
V3SOCK=$KATA_RS_WORK/vmm-api3.vsock
T0=$(ms)
KATA_VMM_DEBUG=1 kata-vmm $(echo "$VM_ARGS" | sed "s|$VSOCK|$V3SOCK|; s|$SOCK|$KATA_RS_WORK/vmm-api3.sock|; s|ktsnap0|ktsnap2|") \
    --net tap=ktfill2 --fs "socket=$FSW/vfsd.sock,tag=kataShared" \
    --console-log "$KATA_RS_WORK/vmm-api3.log" --restore "$S2" --restore-memory copy > "$FSW/vmm.out" 2>&1 &
VPID3=$!
first_check 120 "$V3SOCK"; echo "copy-check-rc=$?"
echo "restore-copy-ms=$(( $(ms) - T0 ))"
echo "restore-copy-vmm=$(grep -o 'VM restored in [^ ]*' "$FSW/vmm.out" | cut -d' ' -f4)"
echo "copy-bytes=$(sed -n 's/.*guest RAM copied into memfds: \([0-9]*\) bytes.*/\1/p' "$FSW/vmm.out")"
echo "copy-slots=$(sed -n 's/.*virtio-mmio slots (DeviceID\/Status): //p' "$FSW/vmm.out" | tr ' ' ,)"
echo "copy-fs-handshake=$(grep -c 'debug: fs: tag kataShared' "$FSW/vmm.out")"
# Guest RAM: the memfds' shared mappings (what SET_MEM_TABLE passes), no mapping of the
# snapshot's memory file.
echo "copy-memfd-maps=$(grep -c 'memfd:kata-vmm-ram' /proc/$VPID3/maps)"
echo "copy-file-maps=$(grep -c "$S2/memory" /proc/$VPID3/maps)"
# AfterRestore binds slot 5: the guest's virtio-fs driver starts the device (the memfds go to
# virtiofsd with SET_MEM_TABLE), and the agent mounts the share through it.
echo "copy-after-restore=$(timeout 60 "$AFTER" "$V3SOCK" --hostname restored3 --share-tag kataShared 2>&1 | tr ' ' _)"
set -- $(rss_pss $VPID3); echo "copied-rss-kib=$1"
timeout 120 kata-agent-ctl --uds "$V3SOCK" shutdown; echo "copy-shutdown-rc=$?"
kata_rs_wait_exit $VPID3 60 copy-vmm-rc
grep -v 'debug: limits' "$FSW/vmm.out" | sed 's/^/copy-stderr| /'
kill $FPID 2>/dev/null; wait $FPID 2>/dev/null
rm -rf "$FSW" "$KATA_RS_WORK/vmm-api3.sock" "$V3SOCK"

echo "== end"
timeout 120 kata-agent-ctl --uds "$VSOCK" shutdown
echo "shutdown-rc=$?"
kata_rs_wait_exit $VPID 60 vmm-rc
grep -v 'debug: limits' "$KATA_RS_WORK/vmm-api-restored.out" | sed 's/^/restored-stderr| /'
rm -rf "$SNAPROOT" "$DISK"
# The jailed VMM cannot unlink its socket: the caller does.
[ -S "$SOCK" ] && echo "sock-left=yes" && rm -f "$SOCK"
tail -n 5 "$LOG" | sed 's/^/console| /'
kata_rs_leftovers
echo "leftovers-rc=$?"
