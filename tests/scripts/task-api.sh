# The Task API through ctr on one kata container (one microVM): exec (output, exit status),
# exec with a tty and a tty container (ctr needs a terminal on its stdin: util-linux `script`,
# from the node's PATH or from KATA_RS_NODE_EXTRA=/usr/bin/script, provides one), ps,
# pause/resume, metrics, update (if this ctr has `task update`), checkpoint (clear error),
# kill --all, the events in containerd's order; then the configuration: a ConfigPath runtime
# option with an allowed memory annotation, and a refused annotation (if this ctr has
# --runtime-config-path / --annotation). The Rust test (tests/tests/task_api.rs) checks the markers. Every case prints its
# markers whatever happens, so one failing case does not hide the others.
R=io.containerd.kata.v2
W=$KATA_RS_WORK
T="timeout -k 30 120"

ctr events > "$W/events.log" 2>&1 &
EVENTS=$!

echo "== run"
$T ctr run -d --runtime $R "$KATA_RS_IMAGE" t1 sh -c 'trap "exit 7" TERM; while true; do sleep 1; done'
echo "run-rc=$?"
kata_rs_wait_status t1 RUNNING 60
echo "run-status=$(kata_rs_task_status t1)"

echo "== exec"
$T ctr task exec --exec-id e1 t1 sh -c 'echo exec-out; echo exec-err >&2; exit 5'
echo "exec-rc=$?"

echo "== exec-stdin"
echo "from-stdin" | $T ctr task exec --exec-id e2 t1 cat
echo "exec-stdin-rc=$?"

echo "== exec-tty"
PTY=$(command -v script 2>/dev/null || echo "$KATA_RS_PAYLOAD/extra/usr/bin/script")
if [ -x "$PTY" ]; then
    $T "$PTY" -qec "ctr task exec -t --exec-id e3 t1 sh -c 'tty; exit 6'" /dev/null < /dev/null > "$W/tty1" 2>&1
    rc=$?
    tr -d '\r\000' < "$W/tty1"; echo  # the tool's output may end without a newline
    echo "exec-tty-rc=$rc"
else
    echo "exec-tty-rc=skipped (no pseudo-terminal tool on this node)"
fi

echo "== ps"
$T ctr task ps t1 2>&1
echo "ps-rc=$?"

echo "== pause"
$T ctr task pause t1 2>&1
echo "pause-rc=$?"
echo "paused-status=$(kata_rs_task_status t1)"
$T ctr task resume t1 2>&1
echo "resume-rc=$?"
echo "resumed-status=$(kata_rs_task_status t1)"

echo "== metrics"
$T ctr task metrics t1 2>&1
echo "metrics-rc=$?"

echo "== update"
if ctr task help 2>/dev/null | grep -qw update; then
    $T ctr task update --memory-limit 67108864 t1 2>&1
    echo "update-rc=$?"
else
    echo "update-rc=skipped (this ctr has no task update)"
fi

echo "== checkpoint"
$T ctr task checkpoint t1 2>&1
echo "checkpoint-rc=$?"

echo "== kill-all"
$T ctr task exec --exec-id e5 t1 sleep 1000 > /dev/null 2>&1 &
EXEC=$!
sleep 5
$T ctr task kill -a -s KILL t1 2>&1
echo "kill-all-rc=$?"
wait $EXEC
echo "kill-all-exec-rc=$?"
kata_rs_wait_status t1 STOPPED 60
echo "killed-status=$(kata_rs_task_status t1)"
$T ctr task delete t1 2>&1
echo "delete-rc=$?"
ctr container rm t1
sleep 1

echo "== run-tty"
if [ -x "$PTY" ]; then
    $T "$PTY" -qec "ctr run -t --rm --runtime $R $KATA_RS_IMAGE t2 sh -c 'tty; exit 4'" /dev/null < /dev/null > "$W/tty2" 2>&1
    rc=$?
    tr -d '\r\000' < "$W/tty2"; echo  # the tool's output may end without a newline
    echo "run-tty-rc=$rc"
else
    echo "run-tty-rc=skipped (no pseudo-terminal tool on this node)"
fi

kill $EVENTS 2>/dev/null
wait $EVENTS 2>/dev/null
echo "== events"
awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\/tasks\//) { print $i; break } }' "$W/events.log"
echo "== after"
echo "tasks=$(ctr task ls -q | wc -l)"
kata_rs_leftovers
echo "leftovers-rc=$?"

echo "== config-path"
HELP=$(ctr run --help 2>&1)
if echo "$HELP" | grep -q -- --runtime-config-path && echo "$HELP" | grep -q -- --annotation; then
    sed '/^\[hypervisor\]/a enable_annotations = ["default_memory"]' /etc/kata-rs/configuration.toml > "$W/allow.toml"
    $T ctr run --rm --runtime $R --runtime-config-path "$W/allow.toml" \
        --annotation io.katacontainers.config.hypervisor.default_memory=320 \
        "$KATA_RS_IMAGE" t3 sh -c 'echo "mem-kib=$(awk "/MemTotal/ { print \$2 }" /proc/meminfo)"' 2>&1
    echo "config-path-rc=$?"
    echo "== refused-annotation"
    $T ctr run --rm --runtime $R --annotation io.katacontainers.config.hypervisor.default_vcpus=2 \
        "$KATA_RS_IMAGE" t4 true 2>&1
    echo "refused-rc=$?"
    ctr container rm t4 > /dev/null 2>&1
    echo "refused-tasks=$(ctr task ls -q | wc -l)"
    kata_rs_leftovers
    echo "refused-leftovers-rc=$?"
else
    echo "config-path-rc=skipped (this ctr has no --runtime-config-path or --annotation)"
fi
