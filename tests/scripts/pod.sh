# A pod in one microVM through ctr, the way CRI groups containers: a sandbox container
# (annotation io.kubernetes.cri.container-type=sandbox, sandbox-id = its own id), then two
# containers (container-type=container, sandbox-id=pod1) that name the sandbox's host
# namespace paths for network, ipc and uts (as CRI does with the pause container's
# /proc/<pid>/ns/...); c2 also names the sandbox's pid namespace. Checks: one VMM for the
# pod, shared net/uts/ipc namespaces and hostname, own mount namespaces, own pid namespace
# for c1 and the sandbox's for c2, exec into pod containers, a TCP connection over the
# pod's localhost, deleting a pod container keeps the VM, a container naming no running
# sandbox fails clearly and leaves nothing, a pod container with a missing command fails
# clearly and leaves nothing in the guest (its id works again), deleting the sandbox stops
# the VM, the guest's clock is the node's after boot and after pause/resume
# (SetGuestDateTime), and nothing is left at the end. tests/tests/pod.rs checks the markers; every step
# prints its markers whatever happens.
R=io.containerd.kata.v2
W=$KATA_RS_WORK
T="timeout -k 30 150"
CT=io.kubernetes.cri.container-type
SB=io.kubernetes.cri.sandbox-id
pid_of() { ctr task ls 2>/dev/null | awk -v id="$1" '$1 == id { print $2 }'; }

echo "== sandbox"
$T ctr run -d --runtime $R --annotation $CT=sandbox --annotation $SB=pod1 \
    "$KATA_RS_IMAGE" pod1 sh -c 'while true; do sleep 1; done' 2>&1
echo "sandbox-rc=$?"
kata_rs_wait_status pod1 RUNNING 60
echo "sandbox-status=$(kata_rs_task_status pod1)"
PID=$(pid_of pod1)
echo "sandbox-vmm-fs=$(tr '\0' '\n' 2>/dev/null < /proc/$PID/cmdline | grep -c -- '^--fs$')"
# The jailed VMM's ids: hypervisor.jail_id_base (default 2^31) + its vsock CID - 1000.
echo "sandbox-vmm-cid=$(tr '\0' '\n' 2>/dev/null < /proc/$PID/cmdline | grep -A1 -- '^--vsock-cid$' | tail -n 1)"
echo "sandbox-vmm-uids=$(awk -v OFS=, '/^Uid:/ { print $2, $3, $4, $5 }' /proc/$PID/status)"
echo "sandbox-vmm-gids=$(awk -v OFS=, '/^Gid:/ { print $2, $3, $4, $5 }' /proc/$PID/status)"
# What CRI passes: the sandbox task's host namespace paths (meaningless in the guest).
NS="--with-ns network:/proc/$PID/ns/net --with-ns ipc:/proc/$PID/ns/ipc --with-ns uts:/proc/$PID/ns/uts"

echo "== containers"
$T ctr run -d --runtime $R --annotation $CT=container --annotation $SB=pod1 $NS \
    "$KATA_RS_IMAGE" c1 sh -c 'echo pod-net-ok | nc -l -p 7777; while true; do sleep 1; done' 2>&1
echo "c1-rc=$?"
# c2 also shares the pod's PID namespace (shareProcessNamespace: CRI passes the pause's).
$T ctr run -d --runtime $R --annotation $CT=container --annotation $SB=pod1 $NS \
    --with-ns pid:/proc/$PID/ns/pid "$KATA_RS_IMAGE" c2 sh -c 'echo c2-only > /c2-file; while true; do sleep 1; done' 2>&1
echo "c2-rc=$?"
kata_rs_wait_status c1 RUNNING 60
kata_rs_wait_status c2 RUNNING 60
echo "c1-status=$(kata_rs_task_status c1)"
echo "c2-status=$(kata_rs_task_status c2)"
echo "pod-vmms=$(kata_rs_count_procs kata-vmm)"
echo "pod-shims=$(kata_rs_count_procs containerd-shim-kata-v2)"
echo "pod-virtiofsd-sockets=$(ls /run/kata-rs/sandboxes/*/virtiofsd.sock 2>/dev/null | wc -l)"
echo "c1-task-pid=$(pid_of c1)"
echo "sandbox-task-pid=$PID"

echo "== namespaces"
for c in pod1 c1 c2; do
    $T ctr task exec --exec-id ns-$c $c sh -c \
        'for n in net uts ipc mnt pid; do echo "$n=$(readlink /proc/self/ns/$n)"; done; echo "hostname=$(hostname)"; ls /c2-file 2>/dev/null | sed "s/^/sees=/"' \
        > "$W/ns-$c" 2>&1
    rc=$?
    sed "s/^/$c-/" "$W/ns-$c"
    echo "exec-$c-rc=$rc"
done

echo "== localhost"
$T ctr task exec --exec-id nc1 c2 nc 127.0.0.1 7777 2>&1
echo "nc-rc=$?"

echo "== clock"
# The shim sets the guest's clock to the host's after boot and after Resume
# (SetGuestDateTime); guest time minus node time, in seconds (an exec takes a moment).
g=$($T ctr task exec --exec-id clk1 c1 date +%s 2>&1); h=$(date +%s)
echo "clock-skew=$((g - h))"
$T ctr task pause c1 2>&1
sleep 2
$T ctr task resume c1 2>&1
echo "resume-rc=$?"
g=$($T ctr task exec --exec-id clk2 c1 date +%s 2>&1); h=$(date +%s)
echo "resume-clock-skew=$((g - h))"
echo "clock-syncs-boot=$(grep -c 'guest clock set to the host.s (after boot)' "$KATA_RS_CONTAINERD_LOG")"
echo "clock-syncs-resume=$(grep -c 'guest clock set to the host.s (after resume)' "$KATA_RS_CONTAINERD_LOG")"

echo "== delete-container"
$T ctr task kill -s KILL c2 2>&1
kata_rs_wait_status c2 STOPPED 60
$T ctr task delete c2 2>&1
echo "delete-c2-rc=$?"
ctr container rm c2 2>&1
sleep 1
echo "after-c2-vmms=$(kata_rs_count_procs kata-vmm)"
echo "after-c2-sandbox-status=$(kata_rs_task_status pod1)"
echo "after-c2-c1-status=$(kata_rs_task_status c1)"
$T ctr task exec --exec-id alive c1 echo c1-still-alive 2>&1
echo "after-c2-exec-rc=$?"

echo "== bad-sandbox"
$T ctr run -d --runtime $R --annotation $CT=container --annotation $SB=nosuchpod \
    "$KATA_RS_IMAGE" bad1 true 2>&1
echo "bad-rc=$?"
ctr container rm bad1 > /dev/null 2>&1
echo "bad-task=$(ctr task ls -q | grep -c '^bad1$')"
kata_rs_wait_procs containerd-shim-kata-v2 1 30
echo "bad-shims=$(kata_rs_count_procs containerd-shim-kata-v2)"
echo "bad-vmms=$(kata_rs_count_procs kata-vmm)"

echo "== bad-command"
# A pod container that fails in the guest (its rootfs already unpacked there): clear error,
# the pod goes on, and the same id works afterwards (nothing of it was left in the guest).
$T ctr run -d --runtime $R --annotation $CT=container --annotation $SB=pod1 $NS \
    "$KATA_RS_IMAGE" c3 nosuchcmd 2>&1
echo "badcmd-rc=$?"
ctr container rm c3 > /dev/null 2>&1
echo "badcmd-sandbox-status=$(kata_rs_task_status pod1)"
echo "badcmd-vmms=$(kata_rs_count_procs kata-vmm)"
$T ctr run -d --runtime $R --annotation $CT=container --annotation $SB=pod1 $NS \
    "$KATA_RS_IMAGE" c3 sh -c 'while true; do sleep 1; done' 2>&1
echo "retry-rc=$?"
kata_rs_wait_status c3 RUNNING 60
echo "retry-status=$(kata_rs_task_status c3)"
$T ctr task kill -s KILL c3 2>&1
kata_rs_wait_status c3 STOPPED 60
$T ctr task delete c3 2>&1
ctr container rm c3 > /dev/null 2>&1

echo "== delete-sandbox"
# The sandbox goes first while c1 still runs: its VM stops, c1 is reported stopped.
$T ctr task kill -s KILL pod1 2>&1
kata_rs_wait_status pod1 STOPPED 60
echo "sandbox-killed-status=$(kata_rs_task_status pod1)"
echo "sandbox-killed-vmms=$(kata_rs_count_procs kata-vmm)"
$T ctr task delete pod1 2>&1
echo "delete-sandbox-rc=$?"
kata_rs_wait_procs kata-vmm 0 30
echo "after-sandbox-vmms=$(kata_rs_count_procs kata-vmm)"
kata_rs_wait_status c1 STOPPED 30
echo "after-sandbox-c1-status=$(kata_rs_task_status c1)"
$T ctr task delete c1 2>&1
echo "delete-c1-rc=$?"
ctr container rm pod1 c1 2>&1
kata_rs_wait_procs containerd-shim-kata-v2 0 30

echo "== after"
echo "tasks=$(ctr task ls -q | wc -l)"
kata_rs_leftovers
echo "leftovers-rc=$?"
