# The CRI churn (issue 11): N kata pods (default 50), P at a time (default 2), each created and
# removed through containerd's CRI as the kubelet does it (RunPodSandbox, a container, ExecSync,
# StopPodSandbox, RemovePodSandbox) by the CRI client's `--churn` mode (tests/cri; $1 its host
# path, through KATA_RS_NODE_EXTRA). Afterwards nothing may be left: no pod or container listed
# by CRI, no task bundle in the CRI containerd's state, no kata-rs process, mount, socket,
# state, console log, cgroup, tap or qdisc (kata_rs_leftovers). tests/tests/cri.rs checks it.
CRI=$KATA_RS_PAYLOAD/extra$1
N=${2:-50}
P=${3:-2}
W=$KATA_RS_WORK
[ -x "$CRI" ] || { echo "no CRI client at $CRI (pass its host path as \$1 and in KATA_RS_NODE_EXTRA)" >&2; exit 1; }
t0=$(kata_rs_uptime)
echo "== cri containerd"
if ! kata_rs_start_cri_containerd; then echo "cri-containerd=failed"; exit 1; fi
echo "cri-containerd=ok"

echo "== churn"
mkdir -p "$W/cri-logs/churn"
timeout -k 30 2400 "$CRI" --socket "$KATA_RS_CRI_SOCKET" --handler kata --image "$KATA_RS_IMAGE" \
    --log-dir "$W/cri-logs/churn" --cgroup-parent /kata-rs-test/cri-churn --timeout 300 \
    --churn "$N" --parallel "$P" > "$W/churn.out" 2>&1
rc=$?
echo "churn-rc=$rc"
cat "$W/churn.out"
# Every line containerd and the shims logged about pod sandbox $1 (and the containers CRI logs
# next to it), prefixed with $2: the shim's errors name what became of the VM.
pod_lines() {
    sb=$1 tag=$2-${1%"${1#????????????}"}
    ids=$(grep "$sb" "$KATA_RS_CRI_LOG" | grep -o '[0-9a-f]\{64\}' | sort -u | tr '\n' '|' | sed 's/|$//')
    grep -E "$ids" "$KATA_RS_CRI_LOG" | grep -v 'msg="loading plugin' | tail -n 80 | cut -c1-700 \
        | sed "s/^/$tag| /"
    # Its VMM's own lines (stderr, logged by pid: the device reports of a lost guest).
    vpid=$(grep "$sb" "$KATA_RS_CRI_LOG" | sed -n 's/.*msg="agent .* ready .* pid=\([0-9]*\).*/\1/p' | head -n 1)
    [ -n "$vpid" ] && grep -E "pid=$vpid( |$)" "$KATA_RS_CRI_LOG" | grep 'stderr' | tail -n 20 | cut -c1-3000 \
        | sed "s/^/$tag-vmm| /"
}
if [ $rc -ne 0 ]; then
    grep -E 'level=(warning|error)' "$KATA_RS_CRI_LOG" | grep -v 'cleaning up after shim disconnected' \
        | tail -n 30 | cut -c1-1500 | sed 's/^/churn-warn| /'
    # The pod's sandbox id: named in the error ("sandbox ID: ..."), or, for a RunPodSandbox
    # that failed, in the paths the shim's error quotes (/run/kata-rs/sandboxes/ID/...).
    for sb in $(grep '^churn| pod [0-9]*: FAILED ' "$W/churn.out" | grep -o '[0-9a-f]\{64\}' | sort -u); do
        pod_lines "$sb" failed-pod
    done
fi
# A pod that succeeded only after a long wait (its steps' times are in its SLOW line).
for sb in $(sed -n 's/^churn| pod [0-9]*: SLOW, sandbox \([0-9a-f]\{64\}\).*/\1/p' "$W/churn.out"); do
    pod_lines "$sb" slow-pod
done

# A VM whose guest kernel panicked (an oops is a panic: vmm/README "Kernel command line"): the
# pod still goes, its containers reported exited; the console's last lines say why.
panics=$(grep 'the guest stopped itself right after' "$KATA_RS_CRI_LOG" | grep -o 'id=[0-9a-f]\{64\}' | cut -c4- | sort -u)
echo "churn-guest-panics=$(echo "$panics" | grep -c .)"
for sb in $panics; do
    pod_lines "$sb" panic-pod
done

echo "== after"
echo "cri-kata-agent-ready=$(grep -c 'msg="agent .* ready (guest kernel' "$KATA_RS_CRI_LOG")"
echo "cri-tasks=$(ctr --address "$KATA_RS_CRI_SOCKET" -n k8s.io task ls -q | wc -l)"
n=0
for b in "$W/cri/state/io.containerd.runtime.v2.task/k8s.io"/*; do
    [ -e "$b" ] || continue
    echo "leftover-bundle| $b"; n=$((n + 1))
done
echo "cri-bundles=$n"
kata_rs_cri_finish $rc "$t0"
exit 0
