# Recovery, through ctr on kata containers: (1) the VMM of a running container is killed:
# `ctr run` must end with 137 (the task exits), and nothing is left behind; (2) containerd is
# restarted while a kata container runs: it must reconnect to the shim, so exec, kill and
# delete still work and report the right statuses. Markers: tests/tests/recovery.rs. Every
# case prints its markers whatever happens.
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
kata_rs_wait_status r2 STOPPED 60
echo "restart-kill-status=$(kata_rs_task_status r2)"
$T ctr task rm r2 > "$W/rm.out" 2>&1
echo "restart-rm-rc=$?"
sed 's/^/restart-rm| /' "$W/rm.out"
ctr container rm r2
echo "restart-containers=$(ctr container ls -q | wc -l)"
kata_rs_leftovers > "$W/left"; r=$?
sed 's/^/containerd-restart| /' "$W/left"
echo "restart-leftovers-rc=$r"
