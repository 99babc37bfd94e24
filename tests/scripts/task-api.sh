# The Task API through ctr on one kata container (one microVM): exec (output, exit status),
# exec with a tty and a tty container (ctr needs a terminal on its stdin: util-linux `script`,
# from the node's PATH or from KATA_RS_NODE_EXTRA=/usr/bin/script, provides one), ps,
# pause/resume, metrics, update (if this ctr has `task update`), checkpoint (clear error),
# kill --all, the events in containerd's order; then the configuration: a ConfigPath runtime
# option with an allowed memory annotation, and a refused annotation (if this ctr has
# --runtime-config-path / --annotation). The Rust test (tests/tests/task_api.rs) checks the markers. Every case prints its
# markers whatever happens, so one failing case does not hide the others.
# While t1 runs, the agent channel (issue 11, docs/security.md): an unprivileged node user and
# a runc container try to reach t1's agent (guest vsock port 1024) by AF_VSOCK to the VM's CID
# and through the VMM's Unix socket; root's connect through the socket must work.
#   $1: kata-vsock-stress (static; through KATA_RS_NODE_EXTRA), its `probe` makes one attempt
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

echo "== agent-channel"
# probe CMD...: runs CMD (one or more `kata-vsock-stress probe --tag TAG` attempts); its
# output as `probe| ...`, then TAG=yes|no for each attempt (no marker: the probe never ran).
probe() {
    _out=$(timeout -k 5 120 "$@" 2>&1)
    echo "$_out" | sed 's/^/probe| /'
    echo "$_out" | sed -n 's/^\([a-z-]*\): probe [a-z]* connected=\([a-z]*\).*/\1=\2/p'
}
# The node's unprivileged user: nobody (busybox's and util-linux's nsenter both set the ids and
# drop supplementary groups; no capabilities remain).
AS_USER="nsenter -S 65534 -G 65534"
UDS=/run/kata-rs/sandboxes/t1/kata-vmm.vsock
# A copy every user (and the runc container, bind-mounted) can run.
KVS_DIR=$(mktemp -d /tmp/kata-rs-probe.XXXXXX)
chmod 0755 "$KVS_DIR"
KVS=$KVS_DIR/kata-vsock-stress
# t1's VMM (the only one running), its CID and socket from its command line (as `ps` shows
# them to everyone).
VMM_PID=
for _p in /proc/[0-9]*; do
    _cmd=$(tr '\0' ' ' < "$_p/cmdline" 2>/dev/null)
    _exe=${_cmd%% *}
    [ "${_exe##*/}" = kata-vmm ] && { VMM_PID=${_p#/proc/}; break; }
done
arg() { [ -n "$VMM_PID" ] && tr '\0' '\n' < "/proc/$VMM_PID/cmdline" | sed -n "/^$1\$/{n;p;q;}"; }
CID=$(arg --vsock-cid)
echo "vmm-cid=${CID:-none}"
echo "vmm-uds=$(arg --vsock-uds)"
if [ -z "$1" ] || ! cp "$KATA_RS_PAYLOAD/extra$1" "$KVS" || ! chmod 0755 "$KVS"; then
    echo "probe-tool=missing ($1)"
elif [ -z "$CID" ]; then
    echo "probe-tool=ok"
    echo "no kata-vmm with a --vsock-cid:"; ps -o pid,args 2>&1 | grep kata
else
    echo "probe-tool=ok"
    # uid, gid, supplementary groups, effective capabilities of a process run that way
    $AS_USER awk '/^Uid:/ { u = $2 } /^Gid:/ { g = $2 } /^Groups:/ { n = NF - 1 } /^CapEff:/ { c = $2 }
        END { printf "unpriv-uid=%s\nunpriv-gid=%s\nunpriv-groups=%d\nunpriv-capeff=%s\n", u, g, n, c }' /proc/self/status
    ls -ld "${UDS%/*}" "$UDS" 2>&1 | sed 's/^/ls| /'
    # Control: an AF_VSOCK listener on the node itself (loopback transport, CID 1, port
    # 5999). The same user and the same container reach it, so their `no` for the VM is the
    # VM's absence from the host kernel's vsock, not a probe that cannot use AF_VSOCK.
    CTL=
    if [ -d /sys/module/vsock_loopback ]; then
        echo "vsock-loopback=yes"
        "$KVS" serve --ports 5999 --expect 2 --deadline 300 --tag control-serve > "$W/control.log" 2>&1 &
        CTL=$!
        kata_rs_wait_for "$W/control.log" 'listening' 10 || cat "$W/control.log"
    else
        echo "vsock-loopback=no (no vsock_loopback module on this node: no control listener)"
    fi
    probe $AS_USER "$KVS" probe --cid "$CID" --port 1024 --tag user-vsock
    probe $AS_USER "$KVS" probe --uds "$UDS" --port 1024 --tag user-uds
    [ -n "$CTL" ] && probe $AS_USER "$KVS" probe --cid 1 --port 5999 --tag user-vsock-control
    probe "$KVS" probe --cid "$CID" --port 1024 --tag root-vsock
    probe "$KVS" probe --uds "$UDS" --port 1024 --tag root-uds
    # A runc container (ctr's defaults: root in the container, no seccomp profile), probe
    # bind-mounted read-only; the guest's agent, then the control listener.
    probe ctr run --rm --runtime io.containerd.runc.v2 \
        --mount "type=bind,src=$KVS_DIR,dst=/kvs,options=rbind:ro" "$KATA_RS_IMAGE" probe-runc sh -c "
            /kvs/kata-vsock-stress probe --cid $CID --port 1024 --tag runc-vsock
            [ -z '$CTL' ] || /kvs/kata-vsock-stress probe --cid 1 --port 5999 --tag runc-vsock-control"
    ctr container rm probe-runc > /dev/null 2>&1
    if [ -n "$CTL" ]; then
        kill "$CTL" 2>/dev/null; wait "$CTL" 2>/dev/null
        sed 's/^/control| /' "$W/control.log"
    fi
fi
rm -rf "$KVS_DIR"
echo "after-probes-status=$(kata_rs_task_status t1)"

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
