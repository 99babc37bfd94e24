# The VMM's control socket (--api-sock): boot the agent guest with 2 vCPUs, then over the
# socket: ping; pause (the agent must not answer while paused, the vCPU threads sleep in
# the kernel's futex wait instead of KVM_RUN); resume (the agent answers again); shut down.
# $1: the vmm_api client (vmm/examples/vmm_api.rs, given through KATA_RS_NODE_EXTRA).
# Markers are checked by tests/tests/vmm.rs.
API="$KATA_RS_PAYLOAD/extra$1"
CID=44
LOG=$KATA_RS_WORK/vmm-api-console.log
SOCK=$KATA_RS_WORK/vmm-api.sock
: > "$LOG"
kata-vmm --kernel "$KATA_RS_SHARE/vmlinux" --initrd "$KATA_RS_SHARE/kata-rs-initrd.img" \
    --mem-mib 256 --vcpus 2 --vsock-cid $CID --vsock-uds "$KATA_RS_WORK/vmm-api.vsock" --console-log "$LOG" --api-sock "$SOCK" \
    > "$KATA_RS_WORK/vmm-api.out" 2>&1 &
VPID=$!
if kata_rs_wait_for "$LOG" 'kata-rs-agent: ready' 180; then echo "agent-ready=yes"; else echo "agent-ready=no"; fi
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

echo "== end"
timeout 120 kata-agent-ctl --uds "$KATA_RS_WORK/vmm-api.vsock" shutdown
echo "shutdown-rc=$?"
kata_rs_wait_exit $VPID 60 vmm-rc
# The jailed VMM cannot unlink its socket: the caller does.
[ -S "$SOCK" ] && echo "sock-left=yes" && rm -f "$SOCK"
sed 's/^/vmm-stderr| /' "$KATA_RS_WORK/vmm-api.out"
tail -n 5 "$LOG" | sed 's/^/console| /'
kata_rs_leftovers
echo "leftovers-rc=$?"
