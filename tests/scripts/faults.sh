# The fault matrix (issue 11), through ctr on kata containers: SIGKILL of the VMM, the shim
# and containerd at each step of a container's life where the host has work in flight, a guest
# that stops answering, and a full file system where the shim writes. Recovery after start
# (a killed VMM, shim or a restarted containerd of a running container) is recovery.sh's.
#   create-{vmm,shim,containerd}: the kill lands while Create boots the VM (the VMM process
#       exists, the task does not yet);
#   exec-{vmm,shim,containerd}: while an exec'd process runs (its output was seen);
#   delete-{vmm,shim,containerd}: while Delete waits for a guest that stopped answering (the
#       VMM is SIGSTOPped before `ctr task rm`, so Delete is in its agent timeout);
#   frozen: the running container's guest stops answering: exec fails with the agent's
#       timeout, a forced delete still ends everything;
#   enospc-state / enospc-console: the state directory / the console log directory is on a
#       full tmpfs.
#   netns-shim: the shim of a pod sandbox with a network namespace (tap + tc redirects made by
#       the shim) is killed: containerd's cleanup removes the tap and the qdiscs too.
# Each case prints NAME-... markers: what ctr said, the status containerd shows after the
# fault, the result of a later delete, and the leftover counter (processes, mounts, sockets,
# state, console logs, containerd bundles, cgroups, taps and ingress qdiscs). Checked by
# tests/tests/faults.rs. containerd is restarted after each kill of it.
R=io.containerd.kata.v2
RB=io.containerd.katabad.v2
W=$KATA_RS_WORK
T="timeout -k 10 200"
TC=tc
[ -n "${1:-}" ] && [ -x "$KATA_RS_PAYLOAD/extra$1" ] && TC=$KATA_RS_PAYLOAD/extra$1
export KATA_RS_TC=$TC     # (kata_rs_leftovers counts ingress qdiscs with it)
ONLY=${2:-all}            # a comma-separated list of groups: create,exec,delete,frozen,enospc,netns
want() { [ "$ONLY" = all ] || case ",$ONLY," in *",$1,"*) true ;; *) false ;; esac; }
t0=$(kata_rs_uptime)

status_or_gone() { _s=$(kata_rs_task_status "$1"); echo "${_s:-gone}"; }

# wait_vmm SECONDS: until a kata-vmm process exists (Create is booting the VM).
wait_vmm() {
    _dl=$(kata_rs_deadline "$1")
    until [ -n "$(kata_rs_pids kata-vmm)" ]; do kata_rs_before "$_dl" || return 1; sleep 0.05; done
}

# restart_containerd: starts containerd again on the node's configuration, waits for it.
restart_containerd() {
    containerd --config "$W/containerd.toml" >> "$KATA_RS_CONTAINERD_LOG" 2>&1 &
    _dl=$(kata_rs_deadline 60)
    until ctr version > /dev/null 2>&1; do kata_rs_before "$_dl" || return 1; sleep 0.1; done
}

# kill_containerd: SIGKILL containerd and wait until it is gone.
kill_containerd() {
    _c=$(pidof containerd)
    kill -KILL $_c
    _dl=$(kata_rs_deadline 30)
    while kill -0 $_c 2>/dev/null && kata_rs_before "$_dl"; do sleep 0.1; done
}

# kill_one WHO: SIGKILL of the sandbox's VMM (vmm), its shim (shim) or containerd.
kill_one() {
    case $1 in
        vmm) kill -KILL $(kata_rs_pids kata-vmm) ;;
        shim) kill -KILL $(kata_rs_pids containerd-shim-kata-v2) ;;
        containerd) kill_containerd ;;
    esac
}

# shim_exits_then_restart NAME SECS: containerd is gone; the shim must exit on its own within
# SECS (NAME-shim-exited), then containerd starts again (NAME-restarted).
shim_exits_then_restart() {
    kata_rs_wait_procs containerd-shim-kata-v2 0 "$2" && echo "$1-shim-exited=yes" || echo "$1-shim-exited=no"
    restart_containerd && echo "$1-restarted=yes" || echo "$1-restarted=no"
}

# finish NAME ID: what containerd shows (NAME-status), a later delete of whatever is left
# (NAME-rm-rc: `ctr task rm -f`, "none" without a task; NAME-container-rm-rc, "none" without
# a container), the host
# processes gone (NAME-procs-gone), the leftover counter (NAME-leftovers-rc, NAME| lines).
finish() {
    echo "$1-status=$(status_or_gone "$2")"
    if [ -n "$(kata_rs_task_status "$2")" ]; then
        $T ctr task rm -f "$2" > "$W/rm.out" 2>&1; echo "$1-rm-rc=$?"
        sed "s/^/$1-rm| /" "$W/rm.out"
    else
        echo "$1-rm-rc=none"
    fi
    if ctr container ls -q | grep -qx "$2"; then
        $T ctr container rm "$2" > "$W/rm.out" 2>&1; echo "$1-container-rm-rc=$?"
        sed "s/^/$1-container-rm| /" "$W/rm.out"
    else
        echo "$1-container-rm-rc=none"     # (ctr run --rm, or never made)
    fi
    kata_rs_wait_procs kata-vmm 0 60 && kata_rs_wait_procs containerd-shim-kata-v2 0 60 \
        && kata_rs_wait_procs virtiofsd 0 30 && echo "$1-procs-gone=yes" || echo "$1-procs-gone=no"
    kata_rs_leftovers > "$W/left"; _r=$?
    sed "s/^/$1| /" "$W/left"
    echo "$1-leftovers-rc=$_r"
    [ $_r -eq 0 ] || kata_rs_shim_warnings "$1-shim"
}

# The bad runtime's configuration: the node's with short agent and shutdown timeouts (a
# frozen guest is given up on in 15 s instead of 120 s), plus the [runtime] lines in $1.
bad_config() {
    kata_rs_config | sed -e 's/^request_timeout_secs = .*/request_timeout_secs = 15/' \
        -e 's/^shutdown_timeout_secs = .*/shutdown_timeout_secs = 5/' > /etc/kata-rs/bad.toml
    [ -z "${1:-}" ] || printf '[runtime]\n%s\n' "$1" >> /etc/kata-rs/bad.toml
}

# ------------------------------------------------------------------ during Create
want create && for who in vmm shim containerd; do
    n=create-$who id=fc-$who
    echo "== $n"
    $T ctr run -d --runtime $R "$KATA_RS_IMAGE" $id sleep 100000 > "$W/$id.out" 2>&1 < /dev/null &
    RUN=$!
    if wait_vmm 120; then
        echo "$n-task-at-kill=$(status_or_gone $id)"
        kill_one $who
    else
        echo "$n-task-at-kill=no-vmm"
    fi
    kata_rs_wait_exit $RUN 150 "$n-run-rc"
    sed "s/^/$n-run| /" "$W/$id.out" | cut -c1-400
    if [ $who = containerd ]; then
        # Nobody waits for the Create any more: the shim undoes it and exits on its own.
        shim_exits_then_restart $n 120
    fi
    finish $n $id
done

# ------------------------------------------------------------------ during Exec
want exec && for who in vmm shim containerd; do
    n=exec-$who id=fe-$who
    echo "== $n"
    $T ctr run -d --runtime $R "$KATA_RS_IMAGE" $id sleep 100000 < /dev/null > /dev/null 2>&1
    kata_rs_wait_status $id RUNNING 120
    echo "$n-status-before=$(status_or_gone $id)"
    $T ctr task exec --exec-id x $id sh -c 'echo exec-started; exec sleep 100000' > "$W/$id.exec" 2>&1 < /dev/null &
    EX=$!
    kata_rs_wait_for "$W/$id.exec" exec-started 60 && echo "$n-exec-started=yes" || echo "$n-exec-started=no"
    kill_one $who
    kata_rs_wait_exit $EX 60 "$n-exec-rc"
    sed "s/^/$n-exec| /" "$W/$id.exec" | cut -c1-400
    if [ $who = containerd ]; then
        restart_containerd && echo "$n-restarted=yes" || echo "$n-restarted=no"
        # The container outlives containerd: a new exec works, the old one is still there.
        echo "$n-status-restarted=$(status_or_gone $id)"
        $T ctr task exec --exec-id y $id sh -c 'echo after; ps -o comm | grep -c sleep' > "$W/$id.exec2" 2>&1 < /dev/null
        echo "$n-exec2-rc=$?"
        echo "$n-exec2-out=$(tr '\n' ' ' < "$W/$id.exec2" | cut -c1-200)"
    else
        kata_rs_wait_status $id STOPPED 60
    fi
    finish $n $id
done

# ------------------------------------------------------------------ during Delete
bad_config
want delete && for who in vmm shim containerd; do
    n=delete-$who id=fd-$who
    echo "== $n"
    $T ctr run -d --runtime $RB "$KATA_RS_IMAGE" $id sh -c 'sleep 1; exit 3' < /dev/null > /dev/null 2>&1
    kata_rs_wait_status $id STOPPED 120
    echo "$n-status-before=$(status_or_gone $id)"
    kill -STOP $(kata_rs_pids kata-vmm)
    $T ctr task rm $id > "$W/$id.rm" 2>&1 &
    RM=$!
    sleep 2
    echo "$n-rm-running=$(kill -0 $RM 2>/dev/null && echo yes || echo no)"
    kill_one $who
    kata_rs_wait_exit $RM 60 "$n-first-rm-rc"
    sed "s/^/$n-first-rm| /" "$W/$id.rm" | cut -c1-400
    if [ $who = containerd ]; then
        # The shim finishes the Delete nobody waits for (the agent timeout, then SIGKILL of
        # the VMM) and exits.
        shim_exits_then_restart $n 90
    fi
    finish $n $id
done

# ------------------------------------------------------------------ a guest that stops answering
case_frozen() {
    n=frozen id=ff
    echo "== $n"
    $T ctr run -d --runtime $RB "$KATA_RS_IMAGE" $id sleep 100000 < /dev/null > /dev/null 2>&1
    kata_rs_wait_status $id RUNNING 120
    kill -STOP $(kata_rs_pids kata-vmm)
    a=$(kata_rs_uptime)
    $T ctr task exec --exec-id x $id echo hello > "$W/$id.exec" 2>&1 < /dev/null
    echo "$n-exec-rc=$?"
    echo "$n-exec-seconds=$(awk -v a="$a" -v b="$(kata_rs_uptime)" 'BEGIN { printf "%d", b - a }')"
    sed "s/^/$n-exec| /" "$W/$id.exec" | cut -c1-400
    a=$(kata_rs_uptime)
    finish $n $id
    echo "$n-cleanup-seconds=$(awk -v a="$a" -v b="$(kata_rs_uptime)" 'BEGIN { printf "%d", b - a }')"
}
want frozen && case_frozen

# ------------------------------------------------------------------ full file systems
case_enospc() {
    FULL=$W/full
    mkdir -p "$FULL" && mount -t tmpfs -o size=256k,mode=0755 kata-rs-faults-full "$FULL"
    mkdir -p "$FULL/state" "$FULL/console"
    dd if=/dev/zero of="$FULL/filler" bs=4k 2> /dev/null
    echo "full-free-kib=$(df -k "$FULL" | awk 'NR == 2 { print $4 }')"

    n=enospc-state id=fs-state
    echo "== $n"
    bad_config "state_dir = \"$FULL/state\""
    $T ctr run --rm --runtime $RB "$KATA_RS_IMAGE" $id echo hello > "$W/$id.out" 2>&1 < /dev/null
    echo "$n-run-rc=$?"
    sed "s/^/$n-run| /" "$W/$id.out" | cut -c1-400
    echo "$n-state-entries=$(ls -A "$FULL/state" | wc -l)"
    finish $n $id

    n=enospc-console id=fs-console
    echo "== $n"
    bad_config "console_log_dir = \"$FULL/console\""
    $T ctr run --rm --runtime $RB "$KATA_RS_IMAGE" $id echo hello-from-guest > "$W/$id.out" 2>&1 < /dev/null
    echo "$n-run-rc=$?"
    sed "s/^/$n-run| /" "$W/$id.out" | cut -c1-400
    echo "$n-console-entries=$(ls -A "$FULL/console" | wc -l)"
    finish $n $id
    umount "$FULL"
}
want enospc && case_enospc

# ------------------------------------------------------------------ a network namespace
case_netns() {
    n=netns-shim id=fn
    echo "== $n"
    NSF=/var/run/netns/faults-pod   # (a name without kata-rs: the leftover counter lists kata-rs mounts)
    mkdir -p /var/run/netns && touch "$NSF"
    unshare --net="$NSF" true
    # A veth pair inside the namespace (the kernel names the peer): eth0 stands for CNI's.
    nsenter --net="$NSF" ip link add eth0 type veth \
        && nsenter --net="$NSF" ip addr add 10.99.0.2/24 dev eth0 \
        && nsenter --net="$NSF" ip link set eth0 up \
        && echo "$n-netns=ok" || echo "$n-netns=failed"
    # A pod sandbox, as CRI makes it (a kata container joins a network namespace only as a pod).
    $T ctr run -d --runtime $R --with-ns "network:$NSF" --annotation io.kubernetes.cri.container-type=sandbox \
        --annotation io.kubernetes.cri.sandbox-id=$id "$KATA_RS_IMAGE" $id sleep 100000 < /dev/null > "$W/$id.out" 2>&1
    echo "$n-run-rc=$?"
    sed "s/^/$n-run| /" "$W/$id.out" | cut -c1-400
    kata_rs_wait_status $id RUNNING 120
    echo "$n-tap-before=$(nsenter --net="$NSF" ip link show tap0_kata > /dev/null 2>&1 && echo yes || echo no)"
    echo "$n-ingress-before=$(nsenter --net="$NSF" "$TC" qdisc show 2> /dev/null | grep -c ingress)"
    kill -KILL $(kata_rs_pids containerd-shim-kata-v2)
    kata_rs_wait_procs kata-vmm 0 60
    finish $n $id
    echo "$n-tap-after=$(nsenter --net="$NSF" ip link show tap0_kata > /dev/null 2>&1 && echo yes || echo no)"
    echo "$n-ingress-after=$(nsenter --net="$NSF" "$TC" qdisc show 2> /dev/null | grep -c ingress)"
    umount "$NSF" 2> /dev/null; rm -f "$NSF"
}
want netns && case_netns

echo "total-seconds=$(awk -v a="$t0" -v b="$(kata_rs_uptime)" 'BEGIN { printf "%.1f", b - a }')"
