# VM templates ([factory] template = true, docs/templates.md) through ctr, one node boot:
# the first sandbox boots cold and a template of its VM configuration appears; its shim
# exits, and the next two sandboxes (each a new shim process: ctr run starts one per
# container) start from it (the shim's log says so), each runs its container with the right
# output and draws different random numbers; a truncated template state file is refused,
# the sandbox still starts (cold) and a new template is made, which the next sandbox starts
# from; a pod sandbox in a network namespace starts from it; two pod sandboxes from it at
# once get their own hostnames, addresses and MACs; a subset of the parity cases gives the
# same lines from a cold boot and from the template; a template of another configuration
# (256 MiB, copied under a 384 MiB key) is refused naming the difference, the sandbox boots
# cold with 384 MiB and a right template is made; nothing is left. The Rust test
# (tests/tests/template.rs) checks the markers.
R=io.containerd.kata.v2
CONF=/etc/kata-rs/template.toml
TPL=/var/lib/kata-rs/templates
LOG=$KATA_RS_CONTAINERD_LOG
W=$KATA_RS_WORK/template
mkdir -p "$W"
{ kata_rs_config; printf '[factory]\ntemplate = true\ntemplate_dir = "%s"\n' "$TPL"; } > "$CONF"
T="timeout -k 30 300"
# The probe each container runs: its output, then two random draws from the guest kernel.
PROBE='echo "$ID-hello=hi-from-$ID"; echo "$ID-uuid=$(cat /proc/sys/kernel/random/uuid)"; echo "$ID-urandom=$(head -c16 /dev/urandom | od -An -tx1 | tr -d " \n")"'
# template_key: the name of the (one) template directory, empty if none.
template_key() { ls "$TPL" 2>/dev/null | grep -E '^[0-9a-f]{16}-[0-9]+m-[0-9]+c$' | head -n1; }
# wait_template SECS [KEY]: until a template (KEY's, or the one there is) with a state file
# bigger than 4 KiB is there (1 at once when the shim says it could not make one, e.g. after
# a rig fault of its template VM).
wait_template() {
    _end=$(kata_rs_deadline "$1")
    _failed=$(grep -c 'could not be made' "$LOG")
    while kata_rs_before "$_end"; do
        [ "$(grep -c 'could not be made' "$LOG")" -gt "$_failed" ] && return 1
        _k=${2:-$(template_key)}
        if [ -n "$_k" ] && [ "$(stat -c %s "$TPL/$_k/state" 2>/dev/null || echo 0)" -gt 4096 ]; then
            return 0
        fi
        sleep 0.5
    done
    return 1
}
# run_probe ID: a container from the template (ctr run --rm), its output as markers.
run_probe() {
    _t0=$(kata_rs_uptime)
    $T ctr run --rm --runtime $R --runtime-config-path "$CONF" --env "ID=$1" "$KATA_RS_IMAGE" "$1" sh -c "$PROBE"
    echo "$1-rc=$?"
    echo "$1-seconds=$(seconds "$_t0")"
}
# seconds T0: the seconds since uptime T0, one decimal.
seconds() { awk -v a="$1" -v b="$(kata_rs_uptime)" 'BEGIN { printf "%.1f", b - a }'; }
# from_template: how many sandboxes the shims' log says started from a template so far.
from_template() { grep -c 'sandbox started from template' "$LOG"; }
# shim_pids ID: the pids of the shim processes of container ID.
shim_pids() {
    for _p in /proc/[0-9]*; do
        case "$({ tr '\0' ' ' < "$_p/cmdline"; } 2>/dev/null)" in
            *containerd-shim-kata-v2*" -id $1 "*) echo "${_p#/proc/}" ;;
        esac
    done
}
# file_id FILE: what changes when FILE is replaced or rewritten (inode, size, mtime).
file_id() { stat -c '%i-%s-%Y' "$1" 2>/dev/null; }
# shims_running: whether a containerd-shim-kata-v2 process is left.
shims_running() {
    for _p in /proc/[0-9]*; do
        case "$({ tr '\0' ' ' < "$_p/cmdline"; } 2>/dev/null)" in
            */containerd-shim-kata-v2*|containerd-shim-kata-v2*) return 0 ;;
        esac
    done
    return 1
}
# stop ID: ends a detached container and removes it.
stop() {
    $T ctr task kill -s KILL "$1" >/dev/null 2>&1
    kata_rs_wait_status "$1" STOPPED 60 >/dev/null 2>&1
    $T ctr task rm "$1" >/dev/null 2>&1
    $T ctr container rm "$1" >/dev/null 2>&1
}

echo "== cold"
T_ALL=$(kata_rs_uptime)
_t0=$(kata_rs_uptime)
$T ctr run -d --runtime $R --runtime-config-path "$CONF" "$KATA_RS_IMAGE" t1 sleep 600 >/dev/null
echo "t1-rc=$?"
echo "t1-seconds=$(seconds "$_t0")"
wait_template 300; echo "template-made-rc=$?"
KEY=$(template_key)
echo "template-key=$KEY"
echo "template-dir-mode=$(stat -c %a "$TPL/$KEY" 2>/dev/null)"
echo "template-files=$(ls "$TPL/$KEY" 2>/dev/null | tr '\n' ',')"
echo "template-memory-kib=$(du -k "$TPL/$KEY/memory" 2>/dev/null | cut -f1)"
STATE_ID=$(file_id "$TPL/$KEY/state")
# The shim that made the template (t1's, the only one running) ends with t1: the sandboxes
# below are started by new shim processes, from a template an earlier shim made.
MAKER=$(shim_pids t1 | tr '\n' ' ')
echo "maker-shim-pids=$MAKER"
stop t1
_end=$(kata_rs_deadline 60)
while kata_rs_before "$_end" && shims_running; do sleep 0.5; done
_gone=yes
for _p in $MAKER; do [ -d "/proc/$_p" ] && _gone=no; done
echo "maker-shim-gone=$_gone"
if shims_running; then echo "shims-before-t2=1"; else echo "shims-before-t2=0"; fi

echo "== from template"
run_probe t2
run_probe t3
echo "template-starts=$(from_template)"
echo "cold-starts=$(grep -c 'sandbox started by a cold boot' "$LOG")"
# The template the later shims used is the one the first made (not remade, not rewritten).
if [ -n "$STATE_ID" ] && [ "$(file_id "$TPL/$KEY/state")" = "$STATE_ID" ]; then
    echo "template-same=yes"
else
    echo "template-same=no"
fi

echo "== truncated"
# A state file cut short: kata-vmm refuses it, the shim removes the template and boots cold.
dd if=/dev/null of="$TPL/$KEY/state" bs=1 seek=100 2>/dev/null
echo "truncated-size=$(stat -c %s "$TPL/$KEY/state")"
_t0=$(kata_rs_uptime)
$T ctr run -d --runtime $R --runtime-config-path "$CONF" "$KATA_RS_IMAGE" t4 sleep 600 >/dev/null
echo "t4-rc=$?"
echo "t4-seconds=$(seconds "$_t0")"
echo "t4-status=$(kata_rs_task_status t4)"
grep -a "template $KEY failed" "$LOG" | tail -n 1 | cut -c1-600 | sed 's/^/refused-log| /'
echo "refused=$(grep -c "template $KEY failed, removed; cold boot instead" "$LOG")"
echo "cold-starts-after=$(grep -c 'sandbox started by a cold boot' "$LOG")"
wait_template 300; echo "template-remade-rc=$?"
echo "template-remade-size=$(stat -c %s "$TPL/$KEY/state" 2>/dev/null)"
stop t4
run_probe t5
echo "template-starts-after=$(from_template)"

echo "== network"
# A pod sandbox in a network namespace (as CRI makes it, a veth standing for CNI's eth0): its
# tap goes into a placeholder slot beside the share, AfterRestore binds both, and the network
# RPCs give the guest the pod's address.
NSF=/var/run/netns/tpl-pod
mkdir -p /var/run/netns && touch "$NSF" && unshare --net="$NSF" true
nsenter --net="$NSF" ip link add eth0 type veth \
    && nsenter --net="$NSF" ip addr add 10.99.0.2/24 dev eth0 \
    && nsenter --net="$NSF" ip link set eth0 up \
    && echo "netns=ok" || echo "netns=failed"
$T ctr run --rm --runtime $R --runtime-config-path "$CONF" --with-ns "network:$NSF" \
    --annotation io.kubernetes.cri.container-type=sandbox --annotation io.kubernetes.cri.sandbox-id=t6 \
    "$KATA_RS_IMAGE" t6 sh -c 'echo "t6-addr=$(ip -4 -o addr show eth0 | awk "{ print \$4 }")"'
echo "t6-rc=$?"
umount "$NSF" 2>/dev/null; rm -f "$NSF"
echo "template-starts-net=$(from_template)"
echo "secs-first=$(seconds "$T_ALL")"

echo "== pods"
# Two pod sandboxes from the one template at once (started together), each in a network
# namespace of its own (a veth standing for CNI's eth0) and with its own hostname in its spec
# (as CRI sets the pod's): each guest has its pod's hostname, address and MAC.
T_PODS=$(kata_rs_uptime)
# make_rootfs DIR: a copy of the test image's files (a spec's root for ctr run --config).
make_rootfs() {
    mkdir -p "$W/img" "$1"
    ctr images mount "$KATA_RS_IMAGE" "$W/img" >/dev/null && cp -a "$W/img/." "$1/"
    ctr images unmount "$W/img" >/dev/null
}
_before=$(from_template)
for p in a b; do
    NSF=/var/run/netns/tpl-$p
    case $p in a) IP=10.99.0.11/24 ;; *) IP=10.99.0.12/24 ;; esac
    mkdir -p /var/run/netns && touch "$NSF" && unshare --net="$NSF" true
    nsenter --net="$NSF" ip link add eth0 type veth \
        && nsenter --net="$NSF" ip addr add "$IP" dev eth0 \
        && nsenter --net="$NSF" ip link set eth0 up \
        && echo "tp-$p-netns=ok" || echo "tp-$p-netns=failed"
    echo "tp-$p-netns-mac=$(nsenter --net="$NSF" ip link show eth0 | awk '/link\/ether/ { print $2 }')"
    make_rootfs "$W/root-$p"
    ctr oci spec | sed \
        -e 's|"cwd": "/",|"cwd": "/", "args": ["sleep", "600"], "env": ["PATH=/bin:/usr/bin"],|' \
        -e "s|\"linux\": {|\"hostname\": \"tpl-pod-$p\", \"annotations\": {\"io.kubernetes.cri.container-type\": \"sandbox\", \"io.kubernetes.cri.sandbox-id\": \"tp-$p\"}, \"linux\": {|" \
        -e "s|\"type\": \"network\"|\"type\": \"network\", \"path\": \"$NSF\"|" \
        -e "s|\"cgroupsPath\": \"[^\"]*\"|\"cgroupsPath\": \"/kata-rs-test/tpl-$p\"|" \
        -e "s|\"path\": \"rootfs\"|\"path\": \"$W/root-$p\"|" \
        > "$W/tp-$p.json"
done
for p in a b; do
    { $T ctr run -d --runtime $R --runtime-config-path "$CONF" --config "$W/tp-$p.json" "tp-$p" \
        > "$W/tp-$p.out" 2>&1 < /dev/null; echo $? > "$W/tp-$p.rc"; } &
    eval "PID_$p=\$!"
done
wait "$PID_a" "$PID_b"
for p in a b; do
    echo "tp-$p-rc=$(cat "$W/tp-$p.rc")"
    $T ctr task exec --exec-id probe "tp-$p" sh -c 'echo "hostname=$(hostname)"; echo "addr=$(ip -4 -o addr show eth0 | awk "{ print \$4 }")"; echo "mac=$(cat /sys/class/net/eth0/address)"' \
        < /dev/null 2>&1 | sed "s/^/tp-$p-/"
done
echo "pods-from-template=$(($(from_template) - _before))"
for p in a b; do
    stop "tp-$p"
    umount "/var/run/netns/tpl-$p" 2>/dev/null; rm -f "/var/run/netns/tpl-$p"
done
echo "secs-pods=$(seconds "$T_PODS")"

echo "== parity"
# A subset of the parity cases (tests/scripts/parity.sh, the same commands), each as a cold
# boot (the node's configuration) and from the template ($CONF): the lines must be the same.
# Chosen for what a restored VM does differently from a booted one: the share (its device
# filled into a placeholder slot, mounted by AfterRestore), stdio streams and the OOM event
# over vsock connections made after the transport reset, the guest's memory (a copy of the
# template's) under a cgroup limit, cgroups set up by the agent before the snapshot, the
# spec's hostname and a pids limit, and exec/pause/resume in a running restored sandbox.
T_PARITY=$(kata_rs_uptime)
N=0
RUNS=0
_before=$(from_template)
# emit CASE MODE RC FILE
emit() {
    printf 'result %s %s rc=%s out=%s\n' "$1" "$2" "$3" \
        "$(awk 'BEGIN { ORS = "" } NR > 1 { print " ; " } { print }' "$4")"
}
# cfg MODE: ctr run's flag for a start from the template (none for a cold boot).
cfg() { [ "$1" = template ] && echo "--runtime-config-path $CONF"; }
# pcase CASE "CTR RUN FLAGS" "SH -C SCRIPT" (stderr into stdout, one stream keeps the order).
pcase() {
    for mode in cold template; do
        N=$((N + 1))
        [ $mode = template ] && RUNS=$((RUNS + 1))
        # shellcheck disable=SC2046,SC2086 # the flags are split on purpose
        $T ctr run --rm --runtime $R $(cfg $mode) $2 \
            "$KATA_RS_IMAGE" "pc$N" sh -c "exec 2>&1; $3" > "$W/out" 2>&1 < /dev/null
        emit "$1" $mode $? "$W/out"
    done
}
mkdir -p "$W/sa"
echo token-data > "$W/sa/token"
pcase mount-under-symlink \
    "--mount type=bind,src=$W/sa,dst=/var/run/secrets/kubernetes.io/serviceaccount,options=rbind:ro" \
    'cat /var/run/secrets/kubernetes.io/serviceaccount/token; cat /run/secrets/kubernetes.io/serviceaccount/token; cut -d" " -f5 /proc/self/mountinfo | grep secrets; touch /run/secrets/kubernetes.io/serviceaccount/new; echo touch=$?'
pcase cgroup-limits \
    "--memory-limit 67108864 --cpus 0.5 --mount type=cgroup2,src=cgroup2,dst=/sys/fs/cgroup,options=ro:nosuid:nodev:noexec" \
    'p=$(sed -n "s/^0:://p" /proc/self/cgroup); cd /sys/fs/cgroup$p && echo memory.max=$(cat memory.max) cpu.max=$(cat cpu.max)'
for mode in cold template; do
    N=$((N + 1))
    [ $mode = template ] && RUNS=$((RUNS + 1))
    # shellcheck disable=SC2046 # the flags are split on purpose
    printf 'line1\nline2\n' | $T ctr run --rm --runtime $R $(cfg $mode) \
        "$KATA_RS_IMAGE" "pc$N" sh -c 'read a; read b; echo got=$a,$b' > "$W/out" 2>&1
    emit stdin $mode $? "$W/out"
done
# --memory-limit enforced: an allocation beyond it is OOM-killed and containerd gets the event.
timeout -k 30 600 ctr events > "$W/events" 2>&1 &
EVENTS=$!
sleep 1
for mode in cold template; do
    N=$((N + 1))
    [ $mode = template ] && RUNS=$((RUNS + 1))
    # shellcheck disable=SC2046 # the flags are split on purpose
    $T ctr run --rm --runtime $R $(cfg $mode) \
        --memory-limit 33554432 "$KATA_RS_IMAGE" "pc$N" dd if=/dev/zero of=/dev/null bs=128M count=1 \
        > "$W/out" 2>&1 < /dev/null
    rc=$?
    i=0
    until grep '/tasks/oom' "$W/events" | grep -q "\"pc$N\"" || [ $i -ge 10 ]; do sleep 1; i=$((i + 1)); done
    if grep '/tasks/oom' "$W/events" | grep -q "\"pc$N\""; then echo oom-event=yes; else echo oom-event=no; fi >> "$W/out"
    emit oom-kill $mode $rc "$W/out"
done
kill $EVENTS 2>/dev/null
wait $EVENTS 2>/dev/null
# The spec's hostname and a pids limit (64), enforced (ctr run --config, a copy of the image).
make_rootfs "$W/rootfs"
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
    -e "s|\"cgroupsPath\": \"[^\"]*\"|\"cgroupsPath\": \"/kata-rs-test/tpl-pids\"|" \
    -e "s|\"path\": \"rootfs\"|\"path\": \"$W/rootfs\"|" \
    -e 's|"type": "network"|"type": "network"}, {"type": "cgroup"|' \
    -e 's|"mounts": \[|"mounts": [{"destination": "/sys/fs/cgroup", "type": "cgroup2", "source": "cgroup2", "options": ["nosuid", "noexec", "nodev", "ro"]},|' \
    > "$W/pids.json"
for mode in cold template; do
    N=$((N + 1))
    [ $mode = template ] && RUNS=$((RUNS + 1))
    # shellcheck disable=SC2046 # the flags are split on purpose
    $T ctr run --rm --runtime $R $(cfg $mode) \
        --config "$W/pids.json" "pc$N" > "$W/out" 2>&1 < /dev/null
    emit hostname-pids $mode $? "$W/out"
done
# exec into a running container: user, cwd, capabilities, exit status, stdin; ps,
# pause/resume.
for mode in cold template; do
    N=$((N + 1))
    id=pc$N
    [ $mode = template ] && RUNS=$((RUNS + 1))
    # shellcheck disable=SC2046 # the flags are split on purpose
    $T ctr run -d --runtime $R $(cfg $mode) \
        "$KATA_RS_IMAGE" "$id" sleep 100000 > /dev/null 2>&1 < /dev/null
    $T ctr task exec --exec-id e1 --user 1000 --cwd /tmp "$id" sh -c \
        'exec 2>&1; id; pwd; grep -E "^(CapEff|NoNewPrivs)" /proc/self/status; echo pid1=$(tr "\0" " " < /proc/1/cmdline)' \
        > "$W/out" 2>&1 < /dev/null
    emit exec $mode $? "$W/out"
    $T ctr task exec --exec-id e2 "$id" sh -c 'echo five; exit 5' > "$W/out" 2>&1 < /dev/null
    emit exec-status $mode $? "$W/out"
    echo in | $T ctr task exec --exec-id e3 "$id" sh -c 'read x; echo got=$x' > "$W/out" 2>&1
    emit exec-stdin $mode $? "$W/out"
    {
        echo ps-lines=$(ctr task ps "$id" | wc -l)
        ctr task pause "$id" && echo paused=$(kata_rs_task_status "$id")
        ctr task resume "$id" && echo resumed=$(kata_rs_task_status "$id")
    } > "$W/out" 2>&1
    emit pause-resume $mode 0 "$W/out"
    stop "$id"
done
echo "parity-template-runs=$RUNS"
echo "parity-from-template=$(($(from_template) - _before))"
echo "secs-parity=$(seconds "$T_PARITY")"

echo "== foreign"
# A template of another configuration under this one's key: the 256 MiB template copied to
# the key of the same boot with 384 MiB. kata-vmm refuses it naming the difference, the shim
# warns and removes it, the sandbox boots cold (with 384 MiB), and a right template is made.
T_FOREIGN=$(kata_rs_uptime)
FKEY=${KEY%%-*}-384m-1c
CONF384=/etc/kata-rs/template-384.toml
{ kata_rs_config mem_mib=384; printf '[factory]\ntemplate = true\ntemplate_dir = "%s"\n' "$TPL"; } > "$CONF384"
# (The memory file is hard-linked, not copied: the node's disk is its RAM, and kata-vmm
# refuses the state file before it opens the memory.)
mkdir -m 700 "$TPL/$FKEY" && cp -p "$TPL/$KEY/state" "$TPL/$KEY/cid" "$TPL/$FKEY/" \
    && ln "$TPL/$KEY/memory" "$TPL/$FKEY/memory"
echo "foreign-key=$FKEY"
echo "foreign-copied=$(ls "$TPL/$FKEY" 2>/dev/null | tr '\n' ',')"
$T ctr run --rm --runtime $R --runtime-config-path "$CONF384" "$KATA_RS_IMAGE" t7 \
    sh -c 'echo "t7-hello=hi-from-t7"; echo "t7-memtotal-kib=$(awk "/^MemTotal/ { print \$2 }" /proc/meminfo)"'
echo "t7-rc=$?"
grep -a "template $FKEY failed" "$LOG" | tail -n 1 | cut -c1-600 | sed 's/^/foreign-log| /'
echo "foreign-refused=$(grep -c "template $FKEY failed, removed; cold boot instead" "$LOG")"
echo "foreign-cold=$(grep -c "sandbox started by a cold boot in [0-9]* ms (template mode, key $FKEY)" "$LOG")"
wait_template 300 "$FKEY"; echo "foreign-remade-rc=$?"
echo "foreign-remade-memory-bytes=$(stat -c %s "$TPL/$FKEY/memory" 2>/dev/null)"
echo "secs-foreign=$(seconds "$T_FOREIGN")"
echo "secs-all=$(seconds "$T_ALL")"

echo "== times"
grep -a -oE 'sandbox started (by a cold boot|from template [0-9a-f]+-[0-9]+m-[0-9]+c) in [0-9]+ ms' "$LOG" | sed 's/^/start| /'
grep -a -oE 'template [0-9a-f]+-[0-9]+m-[0-9]+c made in [0-9]+ ms' "$LOG" | sed 's/^/made| /'
grep -a -oE 'restored VM: [^"]*' "$LOG" | sed 's/^/restore-steps| /'
grep -a -E 'started VMM|virtiofsd|VM restored|restored VM|sandbox started|ready \(guest|template|shared in' "$LOG" | cut -c1-260 | sed 's/^/timeline| /'
grep -a -iE 'warn.*template' "$LOG" | cut -c1-400 | sed 's/^/template-warning| /'

echo "== after"
# Every shim is gone (one still making a template would wait for it).
_end=$(kata_rs_deadline 60)
while kata_rs_before "$_end" && shims_running; do sleep 0.5; done
echo "template-dir=$(ls -A "$TPL" | tr '\n' ',')"
echo "containers=$(ctr container ls -q | wc -l)"
kata_rs_leftovers
echo "leftovers-rc=$?"
