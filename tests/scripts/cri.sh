# The CRI test: a second containerd with the CRI plugin (kata_rs_start_cri_containerd, runtime
# handlers runc and kata), and one pod per handler driven at the same time by the CRI client
# kata-rs-cri (tests/cri; its host path is $1, copied here by KATA_RS_NODE_EXTRA): host
# network, two containers (httpd server, client), ExecSync, the server on localhost from the
# client, ContainerStats, the CRI log files, StopPodSandbox, RemovePodSandbox. Each client's
# markers are printed in its section (== runc, == kata); tests/tests/cri.rs checks them.
CRI=$KATA_RS_PAYLOAD/extra$1
W=$KATA_RS_WORK
[ -x "$CRI" ] || { echo "no CRI client at $CRI (pass its host path as \$1 and in KATA_RS_NODE_EXTRA)" >&2; exit 1; }
t0=$(kata_rs_uptime)
echo "== cri containerd"
if ! kata_rs_start_cri_containerd; then echo "cri-containerd=failed"; exit 1; fi
echo "cri-containerd=ok"
echo "cri-containerd-seconds=$(awk -v a="$t0" -v b="$(kata_rs_uptime)" 'BEGIN { printf "%.1f", b - a }')"
ctr --address "$KATA_RS_CRI_SOCKET" -n k8s.io image ls -q | sed 's/^/images| /'

# Both pods at once; each client prints to its own file.
pids=
for h in runc kata; do
    case $h in runc) port=18080 ;; kata) port=18081 ;; esac
    mkdir -p "$W/cri-logs/$h"
    timeout -k 30 900 "$CRI" --socket "$KATA_RS_CRI_SOCKET" --handler "$h" --image "$KATA_RS_IMAGE" \
        --log-dir "$W/cri-logs/$h" --port "$port" --cgroup-parent "/kata-rs-test/cri-$h" --timeout 300 \
        > "$W/cri-$h.out" 2>&1 &
    pids="$pids $!"
done
rc=0
for p in $pids; do wait "$p" || rc=1; done
for h in runc kata; do
    echo "== $h"
    cat "$W/cri-$h.out"
done

echo "== after"
# The kata handler reached kata-rs: pod VMs whose agent answered (the shim logs to containerd).
echo "cri-kata-agent-ready=$(grep -c 'msg="agent .* ready (guest kernel' "$KATA_RS_CRI_LOG")"
echo "cri-containers=$(ctr --address "$KATA_RS_CRI_SOCKET" -n k8s.io container ls -q | wc -l)"
echo "cri-tasks=$(ctr --address "$KATA_RS_CRI_SOCKET" -n k8s.io task ls -q | wc -l)"
# Nothing of the pods still mounted (sandbox /dev/shm, rootfs) under the CRI containerd's dirs.
kata_rs_cri_finish $rc "$t0"
exit 0
