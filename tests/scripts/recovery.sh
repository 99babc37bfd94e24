# Recovery, through ctr on kata containers: (1) the VMM of a running container is killed:
# `ctr run` must end with 137 (the task exits), and nothing is left behind; (2) the same for a
# pod (sandbox + a container in one VM): every task of the pod exits; (3) the shim is killed:
# containerd cleans up through the shim's `delete` subcommand, nothing is left; (4) containerd
# is restarted while a kata container runs: it must reconnect to the shim, so exec, kill and
# delete still work and report the right statuses; (5) with runtime.debug the guest console
# is kept per sandbox and the shim's debug lines reach containerd's log. Markers:
# tests/tests/recovery.rs. Every case prints its markers whatever happens.
R=io.containerd.kata.v2
W=$KATA_RS_WORK
T="timeout -k 30 180"
pid_of() { ctr task ls 2>/dev/null | awk -v id="$1" '$1 == id { print $2 }'; }

echo "== vmm-killed"
$T ctr run --rm --runtime $R "$KATA_RS_IMAGE" r1 sh -c 'echo started; exec sleep 100000' > "$W/r1.out" 2>&1 < /dev/null &
RUN=$!
kata_rs_wait_status r1 RUNNING 120 && kata_rs_wait_for "$W/r1.out" started 60
pid=$(pid_of r1)
# The task's pid that the shim reports is its VMM's.
echo "task-pid-comm=$(cat "/proc/$pid/comm" 2>/dev/null)"
kill -KILL "$pid"
wait $RUN
echo "killed-run-rc=$?"
sed 's/^/vmm-killed| /' "$W/r1.out"
echo "vmm-killed-containers=$(ctr container ls -q | wc -l)"
kata_rs_leftovers > "$W/left"; r=$?
sed 's/^/vmm-killed| /' "$W/left"
echo "vmm-killed-leftovers-rc=$r"

echo "== pod-vmm-killed"
CT=io.kubernetes.cri.container-type SB=io.kubernetes.cri.sandbox-id
$T ctr run -d --runtime $R --annotation $CT=sandbox --annotation $SB=rp \
    "$KATA_RS_IMAGE" rp sleep 100000 < /dev/null
kata_rs_wait_status rp RUNNING 120
$T ctr run -d --runtime $R --annotation $CT=container --annotation $SB=rp \
    "$KATA_RS_IMAGE" rpc sleep 100000 < /dev/null
kata_rs_wait_status rpc RUNNING 120
echo "pod-vmms=$(kata_rs_count_procs kata-vmm)"
kill -KILL "$(pid_of rp)"
kata_rs_wait_status rp STOPPED 60; kata_rs_wait_status rpc STOPPED 60
echo "pod-killed-status=$(kata_rs_task_status rp),$(kata_rs_task_status rpc)"
for id in rpc rp; do
    $T ctr task rm "$id" > "$W/rm.out" 2>&1; echo "pod-rm-$id-rc=$?"
    sed "s/^/pod-vmm-killed| /" "$W/rm.out"
    ctr container rm "$id"
done
echo "pod-killed-containers=$(ctr container ls -q | wc -l)"
kata_rs_leftovers > "$W/left"; r=$?
sed 's/^/pod-vmm-killed| /' "$W/left"
echo "pod-killed-leftovers-rc=$r"

echo "== shim-killed"
$T ctr run -d --runtime $R "$KATA_RS_IMAGE" rs sleep 100000 < /dev/null
kata_rs_wait_status rs RUNNING 120
shim=$(pidof containerd-shim-kata-v2)
echo "shims=$(echo $shim | wc -w)"
kill -KILL $shim
# containerd notices the dead shim, runs its `delete` subcommand and drops the task (1.6), or
# shows it STOPPED until deleted: either way it no longer runs.
i=0; while [ "$(kata_rs_task_status rs)" = RUNNING ] && [ $i -lt 300 ]; do sleep 0.2; i=$((i + 1)); done
st=$(kata_rs_task_status rs)
echo "shim-killed-status=${st:-gone}"
[ -z "$st" ] || ctr task rm rs > /dev/null 2>&1
ctr container rm rs
echo "shim-killed-containers=$(ctr container ls -q | wc -l)"
kata_rs_wait_procs kata-vmm 0 30
kata_rs_leftovers > "$W/left"; r=$?
sed 's/^/shim-killed| /' "$W/left"
echo "shim-killed-leftovers-rc=$r"

echo "== containerd-restart"
$T ctr run -d --runtime $R "$KATA_RS_IMAGE" r2 sh -c 'trap "exit 9" TERM; while :; do sleep 1; done' < /dev/null
echo "r2-run-rc=$?"
kata_rs_wait_status r2 RUNNING 120
old=$(pidof containerd)
kill -TERM $old
i=0; while kill -0 $old 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
echo "containerd-stopped=$(kill -0 $old 2>/dev/null && echo no || echo yes)"
echo "shims-while-down=$(pidof containerd-shim-kata-v2 | wc -w)"
containerd --config "$W/containerd.toml" >> "$KATA_RS_CONTAINERD_LOG" 2>&1 &
i=0; until ctr version > /dev/null 2>&1 || [ $i -ge 600 ]; do sleep 0.1; i=$((i + 1)); done
echo "containerd-restarted=$([ "$(pidof containerd)" != "" ] && [ "$(pidof containerd)" != "$old" ] && echo yes || echo no)"
echo "restart-status=$(kata_rs_task_status r2)"
$T ctr task exec --exec-id x1 r2 sh -c 'echo exec-after-restart; exit 4' < /dev/null
echo "restart-exec-rc=$?"
$T ctr task kill -s TERM r2
if ! kata_rs_wait_status r2 STOPPED 60; then
    # Not stopped: what the guest still runs, and what containerd and the shim said about r2.
    # (ps goes through the same agent connection; the VMM's SIGTERM report says what its
    # vsock connections were doing.)
    echo "restart-kill-ps=$($T ctr task ps r2 2>&1 | tr '\n' ' ')"
    kill -TERM $(kata_rs_pids kata-vmm) 2>/dev/null; sleep 3
    tail -n 60 "$KATA_RS_CONTAINERD_LOG" | sed 's/^/restart-kill-log| /'
fi
echo "restart-kill-status=$(kata_rs_task_status r2)"
$T ctr task rm r2 > "$W/rm.out" 2>&1
echo "restart-rm-rc=$?"
sed 's/^/restart-rm| /' "$W/rm.out"
ctr container rm r2
echo "restart-containers=$(ctr container ls -q | wc -l)"
kata_rs_leftovers > "$W/left"; r=$?
sed 's/^/containerd-restart| /' "$W/left"
echo "restart-leftovers-rc=$r"

echo "== debug-log"
# runtime.debug: the guest console is kept in <console_log_dir>/<id>.log after the sandbox is
# gone, and the shim's debug lines reach containerd's log (io.containerd.katabad.v2 is the
# same shim with /etc/kata-rs/bad.toml).
{ kata_rs_config; printf '[runtime]\ndebug = true\n'; } > /etc/kata-rs/bad.toml
$T ctr run --rm --runtime io.containerd.katabad.v2 "$KATA_RS_IMAGE" rd echo debug-run > "$W/rd.out" 2>&1 < /dev/null
echo "debug-run-rc=$?"
echo "debug-console-kept=$([ -s /var/log/kata-rs/console/rd.log ] && echo yes || echo no)"
echo "debug-console-agent-ready=$(grep -c 'kata-rs-agent: ready' /var/log/kata-rs/console/rd.log 2>/dev/null)"
grep -m1 'agent answered Check' "$KATA_RS_CONTAINERD_LOG" | cut -c1-300 | sed 's/^/debug-shim| /'
echo "debug-shim-lines=$(grep -c 'level=debug.*agent answered Check' "$KATA_RS_CONTAINERD_LOG")"
rm -f /var/log/kata-rs/console/rd.log
