# Parity: the same containers through io.containerd.runc.v2 (the node's kernel),
# io.containerd.kata.v2 (a microVM booted cold) and kata-template (io.containerd.kata.v2 with
# [factory] template = true: a microVM restored from a VM template, docs/templates.md), one
# line per case and runtime:
#     result <case> <runtime> rc=<exit status> out=<stdout+stderr lines joined by " ; ">
# Arguments: `runtimes=LIST` (default "runc kata kata-template") picks the runtimes;
# `devices` runs only the device cases; `restore_memory=copy|map` sets kata-template's
# factory.restore_memory (default: the shim's). The Rust
# test (tests/tests/parity.rs) asserts that every runtime's line is runc's and checks that
# they are sane. Nothing printed may depend on the kernel, the hostname or the
# cgroup path (they differ between the node and the guest by design).
# shellcheck disable=SC2046 # $(rtflags ...) is several flags, split on purpose
W=$KATA_RS_WORK/parity
mkdir -p "$W"
N=0
RUNTIMES="runc kata kata-template"
ONLY=
RMEM=
for _a in "$@"; do
    case $_a in
        runtimes=*) RUNTIMES=${_a#runtimes=} ;;
        devices) ONLY=devices ;;
        restore_memory=*) RMEM=$_a ;;
        *) echo "parity.sh: unknown argument: $_a" >&2; exit 2 ;;
    esac
done
TPL_CONF=/etc/kata-rs/parity-template.toml
kata_rs_config template_dir=/var/lib/kata-rs/templates $RMEM > "$TPL_CONF"

# rtflags RUNTIME: ctr run's flags for a runtime of $RUNTIMES.
rtflags() {
    case $1 in
        kata-template) echo "--runtime io.containerd.kata.v2 --runtime-config-path $TPL_CONF" ;;
        *) echo "--runtime io.containerd.$1.v2" ;;
    esac
}

# t SECS CMD...: CMD with a time limit; TERM at SECS, KILL 30 s later (ctr forwards TERM to
# the container and would otherwise wait on). When the limit fires, the diagnostics go to
# stderr (processes, VMM threads, guest console, logs) and the status is 124.
t() {
    _secs=$1; shift
    _t0=$(kata_rs_uptime)
    timeout -k 30 "$_secs" "$@"
    _rc=$?
    if [ $_rc -eq 124 ] || { [ $_rc -eq 137 ] && awk -v a="$_t0" -v b="$(kata_rs_uptime)" -v s="$_secs" 'BEGIN { exit !(b - a >= s) }'; }; then
        kata_rs_diag "timed out after ${_secs}s: $*"
        _rc=124
    fi
    return $_rc
}

# A pseudo-terminal for ctr's -t: util-linux `script` (the host's, copied by node-run through
# KATA_RS_NODE_EXTRA) or the node's own.
PTY=$(command -v script 2>/dev/null || echo "$KATA_RS_PAYLOAD/extra/usr/bin/script")

# tty_clean FILE: a terminal's output without what the test tools add: CRs, ctr's log of a
# failed resize of an already finished process, and the "^@" echo of the byte `script` writes
# into the terminal when its own stdin (/dev/null) ends — ctr forwards it to the container's
# terminal, which echoes it if the process has not exited yet (a race with the runtime's speed).
tty_clean() { tr -d '\r\000' < "$1" | sed 's/\^@//g' | grep -v 'resize pty'; }

# emit CASE RUNTIME RC FILE. A kata exit status of 255 is containerd's "unknown": the shim
# lost the process's exit (WaitProcess failed, or the VMM ended first); its warnings follow.
emit() {
    printf 'result %s %s rc=%s out=%s\n' "$1" "$2" "$3" \
        "$(awk 'BEGIN { ORS = "" } NR > 1 { print " ; " } { print }' "$4")"
    case $2 in kata*) [ "$3" = 255 ] && kata_rs_shim_warnings "why-$1-$2" ;; esac
    return 0
}

# Rig faults (tests/README.md): on the emulated node, QEMU TCG's nested SVM now and then
# makes a microVM's guest triple fault, in a run that is otherwise fine. One such fault must
# not cost the whole ten-minute run (CI once lost three in a row that way): a kata run during
# which the shims' log gained a triple fault is run again, at most RIG_RETRIES times, and
# says so (`rig-retry` lines, `rig-retries=N`). Never on a native node, never for runc.
RIG_RETRIES=2
RIG_RETRIED=0
LOG=$KATA_RS_CONTAINERD_LOG
triple_faults() { grep -c 'guest stopped: triple fault' "$LOG"; }
# rig_fault_since COUNT TRY: whether an attempt that began at COUNT triple faults, its try
# number TRY, is to be run again: the emulated node, a fault since, a retry left.
rig_fault_since() {
    [ "$KATA_RS_NODE_KIND" = emulated ] && [ "$(triple_faults)" -gt "$1" ] && [ "$2" -lt $RIG_RETRIES ]
}
cold_starts() { grep -c 'sandbox started by a cold boot in [0-9]* ms (template mode' "$LOG"; }
template_starts() { grep -c 'sandbox started from template' "$LOG"; }
# kata-template cases, and those whose (last) sandbox started from the template.
TPL_CASES=0
TPL_RESTORED=0
GROUPS_RUN=0     # each_rt calls: every runtime runs each group once (retries apart)

# each_rt FN ARGS...: `FN RUNTIME ARGS...` for each runtime of $RUNTIMES, in this shell (FN
# counts N and prints result lines). A kata attempt that met a rig fault is dropped and run
# again (see RIG_RETRIES), after its container is removed and, for kata-template, once the
# template is back (a failed restore removes it and the cold boot that follows makes it again).
each_rt() {
    _fn=$1; shift
    GROUPS_RUN=$((GROUPS_RUN + 1))
    for _rt in $RUNTIMES; do
        _try=0
        while :; do
            _tf=$(triple_faults); _cs=$(cold_starts); _ts=$(template_starts); _n0=$N
            "$_fn" "$_rt" "$@" > "$W/res"
            [ "$_rt" != runc ] && rig_fault_since "$_tf" "$_try" || break
            _try=$((_try + 1))
            RIG_RETRIED=$((RIG_RETRIED + 1))
            echo "rig-retry $_fn $_rt $*: a guest triple faulted during the run; dropped: $(head -c 300 "$W/res" | tr '\n' ' ')"
            while [ "$_n0" -lt "$N" ]; do
                _n0=$((_n0 + 1))
                ctr task rm -f "p$_n0" > /dev/null 2>&1
                ctr container rm "p$_n0" > /dev/null 2>&1
            done
            [ "$_rt" != kata-template ] || kata_rs_wait_template /var/lib/kata-rs/templates "$LOG" 300 \
                || echo "rig-retry: the template is not back"
        done
        cat "$W/res"
        if [ "$_rt" = kata-template ]; then
            TPL_CASES=$((TPL_CASES + 1))
            if [ "$(cold_starts)" -eq "$_cs" ] && [ "$(template_starts)" -eq $((_ts + 1)) ]; then
                TPL_RESTORED=$((TPL_RESTORED + 1))
            else
                echo "template-case-not-restored $_fn $*: cold starts $_cs -> $(cold_starts), template starts $_ts -> $(template_starts)"
            fi
        fi
    done
}

# run_case CASE "CTR RUN FLAGS" "SH -C SCRIPT": ctr run --rm with the test image. The
# script's stderr goes to its stdout inside the container (one stream keeps the order).
run_case() { each_rt run_case_in "$@"; }
run_case_in() {
    N=$((N + 1))
    # shellcheck disable=SC2086 # the flags are split on purpose
    t 600 ctr run --rm $(rtflags "$1") $3 "$KATA_RS_IMAGE" "p$N" \
        sh -c "exec 2>&1; $4" > "$W/out" 2>&1 < /dev/null
    emit "$2" "$1" "$?" "$W/out"
}

# config_case CASE SPECFILE: ctr run --rm --config SPECFILE (rootfs = $W/rootfs).
config_case() { each_rt config_case_in "$@"; }
config_case_in() {
    N=$((N + 1))
    t 600 ctr run --rm $(rtflags "$1") --config "$3" "p$N" > "$W/out" 2>&1 < /dev/null
    emit "$2" "$1" "$?" "$W/out"
}

# signal_case CASE SIGNAL "SH -C SCRIPT": the script prints "ready" once it may be signalled.
signal_case() { each_rt signal_case_in "$@"; }
signal_case_in() {
    N=$((N + 1))
    rm -f "$W/out"
    t 600 ctr run --rm $(rtflags "$1") "$KATA_RS_IMAGE" "p$N" \
        sh -c "$4" > "$W/out" 2>&1 < /dev/null &
    pid=$!
    i=0
    until grep -q ready "$W/out" 2> /dev/null || [ $i -ge 600 ] || ! kill -0 "$pid" 2> /dev/null; do
        sleep 1
        i=$((i + 1))
    done
    ctr task kill -s "$3" "p$N"
    wait "$pid"
    emit "$2" "$1" "$?" "$W/out"
}

# Device access (linux.resources.devices → the guest's cgroup eBPF device program): with
# ctr's default spec (deny all; then runc's defaults: mknod of any device, the standard
# nodes, /dev/pts) a container with CAP_MKNOD makes the nodes of ttyS0 (c 4:64) and sda
# (b 8:0) but cannot open them (EPERM, from the device cgroup), while /dev/null still works;
# privileged (allow all, and all capabilities) it opens the node of /dev/kmsg (c 1:11, present
# in both kernels; write-only, so no syslog capability check and nothing written). The nodes
# go on /dev, a tmpfs under both runtimes: kata's root file system is the host's, shared by
# virtiofsd, which has no CAP_MKNOD (mknod there is EPERM whatever the device rules).
devices_cases() {
    run_case devices-default "" 'cd /dev; mknod kata-rs-ttyS0 c 4 64; echo mknod-c=$?; mknod kata-rs-sda b 8 0; echo mknod-b=$?; echo x > kata-rs-ttyS0; echo write-c=$?; head -c 1 kata-rs-sda > /dev/null; echo read-b=$?; echo > /dev/null; echo null=$?'
    run_case devices-privileged "--privileged" 'cd /dev; mknod kata-rs-kmsg c 1 11; echo mknod=$?; true 3> kata-rs-kmsg; echo open-kmsg=$?'
}

# kata-template: its first sandbox boots cold and its shim makes a template of the VM in the
# background; the cases start once the template is there, so every kata-template line comes
# from a restored VM (each_rt checks the shims' log around each kata-template case: one start
# from the template, no cold boot; the Rust test wants that of every case).
# A template VM that met a rig fault (see RIG_RETRIES) is made again by the next cold boot.
case " $RUNTIMES " in
    *" kata-template "*)
        _try=0
        while :; do
            _tf=$(triple_faults)
            t 600 ctr run --rm $(rtflags kata-template) "$KATA_RS_IMAGE" "p-template$_try" true \
                > /dev/null 2>&1 < /dev/null
            echo "template-first-rc=$?"
            if kata_rs_wait_template /var/lib/kata-rs/templates "$LOG" 300; then
                echo "template-made=yes"
                break
            fi
            rig_fault_since "$_tf" "$_try" || { echo "template-made=no"; break; }
            _try=$((_try + 1))
            RIG_RETRIED=$((RIG_RETRIED + 1))
            echo "rig-retry template: a guest triple faulted while the template was made"
        done
        ;;
esac
# after_markers: what the Rust test checks once the cases ran.
after_markers() {
    echo "case-groups=$GROUPS_RUN"
    echo "template-cases=$TPL_CASES"
    echo "template-cases-restored=$TPL_RESTORED"
    echo "rig-retries=$RIG_RETRIED"
    echo "containers=$(ctr container ls -q | wc -l)"
    echo "tasks=$(ctr task ls -q | wc -l)"
}

# `parity.sh devices`: only the device cases (for iterating; the test runs everything).
if [ "$ONLY" = devices ]; then
    echo "== cases"
    devices_cases
    echo "== after"
    after_markers
    kata_rs_leftovers
    echo "leftovers-rc=$?"
    exit 0
fi

echo "== cases"
devices_cases
run_case env-cwd "--env FOO=bar --cwd /tmp/newdir" 'echo FOO=$FOO; pwd; ls -ld /tmp/newdir | cut -c1-10'
exit_status_in() {     # stderr alone (ctr merges the two streams in no fixed order)
    N=$((N + 1))
    t 600 ctr run --rm $(rtflags "$1") "$KATA_RS_IMAGE" "p$N" \
        sh -c 'echo err >&2; exit 7' > /dev/null 2> "$W/out" < /dev/null
    emit exit-status "$1" "$?" "$W/out"
}
each_rt exit_status_in
run_case caps-default "" "grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status"
run_case caps-add-drop "--cap-add CAP_SYS_ADMIN --cap-drop CAP_CHOWN --allow-new-privs" \
    "grep -E '^(Cap|NoNewPrivs)' /proc/self/status; chown 1000 /tmp; echo chown=\$?"
run_case read-only "--read-only" 'touch /x; echo touch=$?; touch /tmp/y; echo tmp=$?'
run_case masked-readonly "" 'test -s /proc/kcore && echo kcore=visible || echo kcore=hidden; echo firmware=$(ls -A /sys/firmware | wc -l); echo 1 > /proc/sys/vm/overcommit_memory; echo procsys=$?'
run_case rlimit-default "" 'echo nofile=$(ulimit -n) hard=$(ulimit -Hn)'
run_case cgroup-limits \
    "--memory-limit 67108864 --cpus 0.5 --mount type=cgroup2,src=cgroup2,dst=/sys/fs/cgroup,options=ro:nosuid:nodev:noexec" \
    'p=$(sed -n "s/^0:://p" /proc/self/cgroup); cd /sys/fs/cgroup$p && echo memory.max=$(cat memory.max) cpu.max=$(cat cpu.max)'
run_case seccomp-default "--seccomp" "grep -E '^(Seccomp|NoNewPrivs)' /proc/self/status; ls / > /dev/null; echo ls=\$?"
printf '%s\n' '{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],' \
    ' "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}' \
    > "$W/deny-mkdir.json"
run_case seccomp-deny-mkdir "--seccomp --seccomp-profile $W/deny-mkdir.json" \
    'mkdir /tmp/d; echo mkdir=$?; touch /tmp/f; echo touch=$?'

# Mount destinations resolve inside the container's root (runc's securejoin): the image has
# Debian's /var/run -> /run, so the Kubernetes token bound at /var/run/secrets/... is at
# /run/secrets/... in the container (never on the node's or the guest's own /run); and
# /var/escape -> ../../../../../../../../tmp is clamped at the container's root, so a file
# bound under it lands in the container's /tmp. mountinfo shows the resolved mount points.
mkdir -p "$W/sa"
echo token-data > "$W/sa/token"
echo secret-data > "$W/secret"
run_case mount-under-symlink \
    "--mount type=bind,src=$W/sa,dst=/var/run/secrets/kubernetes.io/serviceaccount,options=rbind:ro" \
    'cat /var/run/secrets/kubernetes.io/serviceaccount/token; cat /run/secrets/kubernetes.io/serviceaccount/token; cut -d" " -f5 /proc/self/mountinfo | grep secrets; touch /run/secrets/kubernetes.io/serviceaccount/new; echo touch=$?'
run_case mount-escape-symlink \
    "--mount type=bind,src=$W/secret,dst=/var/escape/kata-rs-parity-secret,options=rbind:ro" \
    'cat /var/escape/kata-rs-parity-secret; cat /tmp/kata-rs-parity-secret; cut -d" " -f5 /proc/self/mountinfo | grep parity-secret'
if [ -e /run/secrets/kubernetes.io ]; then echo node-run-secrets=yes; else echo node-run-secrets=no; fi
if [ -e /tmp/kata-rs-parity-secret ]; then echo node-tmp-secret=yes; else echo node-tmp-secret=no; fi

# stdin through the shim: ctr forwards its stdin to the container (but ctr 1.6 never closes
# it on EOF, so the container reads a known number of lines instead of waiting for EOF).
stdin_in() {
    N=$((N + 1))
    printf 'line1\nline2\n' | t 600 ctr run --rm $(rtflags "$1") \
        "$KATA_RS_IMAGE" "p$N" sh -c 'read a; read b; echo got=$a,$b' > "$W/out" 2>&1
    emit stdin "$1" "$?" "$W/out"
}
each_rt stdin_in

# --memory-limit enforced: an allocation beyond the limit (dd's 128 MiB buffer, filled by
# read) is OOM-killed (137) and containerd gets a /tasks/oom event for the container. The
# container's shell outlives dd by 2 s and exits with its status: runc's shim reads the OOM
# from the cgroup's memory.events, and a cgroup removed at once can take the event with it
# (seen once in CI on a fast node: runc rc=137, no event).
t 1200 ctr events > "$W/events" 2>&1 &
EVENTS=$!
sleep 1
oom_in() {
    N=$((N + 1))
    t 600 ctr run --rm $(rtflags "$1") --memory-limit 33554432 "$KATA_RS_IMAGE" \
        "p$N" sh -c 'dd if=/dev/zero of=/dev/null bs=128M count=1; rc=$?; sleep 2; exit $rc' \
        > "$W/out" 2>&1 < /dev/null
    rc=$?
    i=0     # the event may trail the exit a little
    until grep '/tasks/oom' "$W/events" | grep -q "\"p$N\"" || [ $i -ge 10 ]; do sleep 1; i=$((i + 1)); done
    if grep '/tasks/oom' "$W/events" | grep -q "\"p$N\""; then echo oom-event=yes; else echo oom-event=no; fi >> "$W/out"
    emit oom-kill "$1" "$rc" "$W/out"
}
each_rt oom_in
kill $EVENTS 2> /dev/null
wait $EVENTS 2> /dev/null

# ctr run -t: the container's stdio is a terminal of its own, with the size of ctr's.
run_tty_in() {
    N=$((N + 1))
    t 600 "$PTY" -qec "ctr run -t --rm $(rtflags "$1") $KATA_RS_IMAGE p$N sh -c 'tty; exit 3'" \
        /dev/null < /dev/null > "$W/out" 2>&1
    rc=$?
    tty_clean "$W/out" > "$W/out2"
    emit run-tty "$1" "$rc" "$W/out2"
}
each_rt run_tty_in

signal_case sigterm-trapped SIGTERM 'trap "echo got-term; exit 42" TERM; echo ready; while :; do sleep 1; done'
signal_case sigkill SIGKILL 'echo ready; exec sleep 1000'

# A full spec (ctr run --config): user with additional groups, umask, rlimits, oomScoreAdj,
# a cgroup namespace with cgroup2 mounted. (The spec also sets a pids limit, but runc on the
# node shows no pids.max in that cgroup, so the limit is not compared here yet.)
mkdir -p "$W/img" "$W/rootfs"
ctr images mount "$KATA_RS_IMAGE" "$W/img" > /dev/null
cp -a "$W/img/." "$W/rootfs/"
ctr images unmount "$W/img" > /dev/null
ctr oci spec | sed \
    -e 's|"uid": 0,|"uid": 1000,|' \
    -e 's|"gid": 0$|"gid": 1000, "additionalGids": [10, 20], "umask": 18|' \
    -e 's|"cwd": "/",|"cwd": "/home/kata", "args": ["sh", "-c", "exec 2>\&1; id; umask; echo nofile=$(ulimit -n) hard=$(ulimit -Hn); echo oom=$(cat /proc/self/oom_score_adj); echo cgroup=$(cat /proc/self/cgroup); touch /home/kata/f; echo touch=$?; echo owner=$(stat -c %u:%g /home/kata/f)"], "env": ["PATH=/bin:/usr/bin", "HOME=/home/kata"], "oomScoreAdj": 500,|' \
    -e 's|"hard": 1024,|"hard": 2048,|' -e 's|"soft": 1024|"soft": 512|' \
    -e "s|\"cgroupsPath\": \"[^\"]*\"|\"cgroupsPath\": \"/kata-rs-test/parity-config\"|" \
    -e "s|\"path\": \"rootfs\"|\"path\": \"$W/rootfs\"|" \
    -e 's|"resources": {|"resources": {"pids": {"limit": 64},|' \
    -e 's|"type": "network"|"type": "network"}, {"type": "cgroup"|' \
    -e 's|"mounts": \[|"mounts": [{"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "ro"]},|' \
    > "$W/user.json"
echo "spec-lines=$(wc -l < "$W/user.json")"
config_case config-user "$W/user.json"

# The spec's hostname and a pids limit (64), enforced: forking 100 processes must fail (each
# lives 30 s, so a slow fork+exec, e.g. a loaded node, cannot let early ones end first). (Not compared: pids.max itself, which runc's cgroup namespace on the node does not show
# although the limit holds.)
cat > "$W/rootfs/probe-pids.sh" <<'PROBE'
hostname
if (i=0; while [ $i -lt 100 ]; do sleep 30 & i=$((i + 1)); done) 2>&1 | grep -q "can't fork"; then
    echo fork-limited=yes
else
    echo fork-limited=no
fi
PROBE
ctr oci spec | sed \
    -e 's|"cwd": "/",|"cwd": "/", "args": ["sh", "/probe-pids.sh"], "env": ["PATH=/bin:/usr/bin"],|' \
    -e 's|"linux": {|"hostname": "parity-host", "linux": {|' \
    -e 's|"resources": {|"resources": {"pids": {"limit": 64},|' \
    -e "s|\"cgroupsPath\": \"[^\"]*\"|\"cgroupsPath\": \"/kata-rs-test/parity-pids\"|" \
    -e "s|\"path\": \"rootfs\"|\"path\": \"$W/rootfs\"|" \
    -e 's|"type": "network"|"type": "network"}, {"type": "cgroup"|' \
    -e 's|"mounts": \[|"mounts": [{"destination": "/sys/fs/cgroup", "type": "cgroup2", "source": "cgroup2", "options": ["nosuid", "noexec", "nodev", "ro"]},|' \
    > "$W/pids.json"
config_case hostname-pids "$W/pids.json"

# linux.sysctl (CRI: the pod's securityContext.sysctls): an IPC and a network sysctl are set
# in the container's own namespaces (under kata, the guest's: the pod's network is the VM's),
# then /proc/sys is read-only (ctr's readonlyPaths) as under runc.
ctr oci spec | sed \
    -e 's|"cwd": "/",|"cwd": "/", "args": ["sh", "-c", "exec 2>\&1; cat /proc/sys/kernel/shm_rmid_forced /proc/sys/net/ipv4/ip_local_port_range; echo 0 > /proc/sys/kernel/shm_rmid_forced; echo write=$?"], "env": ["PATH=/bin:/usr/bin"],|' \
    -e 's|"linux": {|"linux": {"sysctl": {"kernel.shm_rmid_forced": "1", "net.ipv4.ip_local_port_range": "30000 40000"},|' \
    -e "s|\"cgroupsPath\": \"[^\"]*\"|\"cgroupsPath\": \"/kata-rs-test/parity-sysctl\"|" \
    -e "s|\"path\": \"rootfs\"|\"path\": \"$W/rootfs\"|" \
    > "$W/sysctl.json"
config_case sysctl "$W/sysctl.json"

# A spec whose process environment has no PATH: runc (Go's LookPath on the env it set) finds
# no `sh`; neither may the agent (it once searched a default PATH). Only the rc and runc's error
# text are compared: ctr wraps the runtimes' errors differently.
ctr oci spec | sed \
    -e 's|"cwd": "/",|"cwd": "/", "args": ["sh", "-c", "echo ran"],|' \
    -e "s|\"cgroupsPath\": \"[^\"]*\"|\"cgroupsPath\": \"/kata-rs-test/parity-nopath\"|" \
    -e "s|\"path\": \"rootfs\"|\"path\": \"$W/rootfs\"|" \
    > "$W/nopath.json"
no_path_in() {
    N=$((N + 1))
    t 600 ctr run --rm $(rtflags "$1") --config "$W/nopath.json" "p$N" \
        > "$W/raw" 2>&1 < /dev/null
    rc=$?
    grep -o 'exec: "sh": executable file not found in $PATH' "$W/raw" | head -n 1 > "$W/out"
    grep -q ran "$W/raw" && echo ran >> "$W/out"
    emit no-path "$1" "$rc" "$W/out"
    ctr container rm "p$N" > /dev/null 2>&1
}
each_rt no_path_in

# exec into a running container (ctr run -d): user, cwd, namespaces, capabilities, exit
# status; a terminal exec (through busybox script when the node has it); ps, pause/resume.
exec_group_in() {
    rt=$1
    N=$((N + 1))
    id=p$N
    t 600 ctr run -d $(rtflags "$rt") "$KATA_RS_IMAGE" "$id" sleep 100000 \
        > /dev/null 2>&1 < /dev/null
    t 300 ctr task exec --exec-id e1 --user 1000 --cwd /tmp "$id" sh -c \
        'exec 2>&1; id; pwd; grep -E "^(CapEff|NoNewPrivs)" /proc/self/status; echo pid1=$(tr "\0" " " < /proc/1/cmdline)' \
        > "$W/out" 2>&1 < /dev/null
    emit exec "$rt" "$?" "$W/out"
    t 300 ctr task exec --exec-id e2 "$id" sh -c 'echo five; exit 5' > "$W/out" 2>&1 < /dev/null
    emit exec-status "$rt" "$?" "$W/out"
    echo in | t 300 ctr task exec --exec-id e3 "$id" sh -c 'read x; echo got=$x' > "$W/out" 2>&1
    emit exec-stdin "$rt" "$?" "$W/out"
    if [ -x "$PTY" ]; then
        t 300 "$PTY" -qec "ctr task exec -t --exec-id t1 $id tty" /dev/null \
            < /dev/null > "$W/out" 2>&1
        rc=$?
        tty_clean "$W/out" > "$W/out2"
        emit exec-tty "$rt" "$rc" "$W/out2"
    fi
    {
        echo ps-lines=$(ctr task ps "$id" | wc -l)
        ctr task pause "$id" && echo paused=$(ctr task ls | awk -v id="$id" '$1 == id { print $3 }')
        ctr task resume "$id" && echo resumed=$(ctr task ls | awk -v id="$id" '$1 == id { print $3 }')
    } > "$W/out" 2>&1
    emit pause-resume "$rt" 0 "$W/out"
    ctr task kill -s SIGKILL "$id" > /dev/null 2>&1
    i=0
    until [ "$(kata_rs_task_status "$id")" = STOPPED ] || [ -z "$(kata_rs_task_status "$id")" ] \
        || [ $i -ge 120 ]; do
        sleep 1
        i=$((i + 1))
    done
    ctr task rm "$id" > /dev/null 2>&1 || ctr task rm -f "$id" > /dev/null 2>&1
    ctr container rm "$id" > /dev/null 2>&1
}
each_rt exec_group_in

echo "== after"
after_markers
kata_rs_leftovers
echo "leftovers-rc=$?"
