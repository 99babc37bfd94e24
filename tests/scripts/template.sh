# VM templates ([factory] template = true, docs/templates.md) through ctr, one node boot:
# the first sandbox boots cold and a template of its VM configuration appears; its shim
# exits, and the next two sandboxes (each a new shim process: ctr run starts one per
# container) start from it (the shim's log says so), each runs its container with the right
# output and draws different random numbers; a truncated template state file is refused,
# the sandbox still starts (cold) and a new template is made, which the next sandbox starts
# from; a pod sandbox in a network namespace starts from it; two pod sandboxes from it at
# once get their own hostnames, addresses and MACs; a template of another configuration
# (256 MiB, copied under a 384 MiB key) is refused naming the difference, the sandbox boots
# cold with 384 MiB and a right template is made; the guest image is replaced: the sandbox
# boots cold, a template of the new image is made, the old ones are removed and the next
# sandbox starts from the new one; nothing is left. (The parity cases run in template mode
# in tests/scripts/parity.sh.) The Rust test
# (tests/tests/template.rs) checks the markers.
R=io.containerd.kata.v2
CONF=/etc/kata-rs/template.toml
TPL=/var/lib/kata-rs/templates
LOG=$KATA_RS_CONTAINERD_LOG
W=$KATA_RS_WORK/template
mkdir -p "$W"
# The guest image is a copy, replaced in the last part (an upgrade of the image).
IMG=/var/lib/kata-rs/template-test-initrd.img
mkdir -p /var/lib/kata-rs && cp "$KATA_RS_SHARE/kata-rs-initrd.img" "$IMG"
kata_rs_config initrd="$IMG" template_dir="$TPL" > "$CONF"
# The two pods at once restore with guest RAM mapped from the template (restore_memory = map,
# the default, said explicitly: pages shared, virtio-fs in bounce mode); the network pod t6
# with restore_memory = copy (guest RAM copied into memfds, virtio-fs direct); every other
# sandbox here with the default.
CONF_MAP=/etc/kata-rs/template-map.toml
kata_rs_config initrd="$IMG" template_dir="$TPL" restore_memory=map > "$CONF_MAP"
CONF_COPY=/etc/kata-rs/template-copy.toml
kata_rs_config initrd="$IMG" template_dir="$TPL" restore_memory=copy > "$CONF_COPY"
T="timeout -k 30 300"
# The probe each container runs: its output, then two random draws from the guest kernel.
PROBE='echo "$ID-hello=hi-from-$ID"; echo "$ID-date=$(date +%s)"; echo "$ID-uuid=$(cat /proc/sys/kernel/random/uuid)"; echo "$ID-urandom=$(head -c16 /dev/urandom | od -An -tx1 | tr -d " \n")"'
# template_key: the name of the (one) template directory, empty if none.
template_key() { kata_rs_template_key "$TPL"; }
# wait_template SECS [KEY]: kata_rs_wait_template in $TPL with the shims' log.
wait_template() { kata_rs_wait_template "$TPL" "$LOG" "$@"; }
# run_probe ID: a container from the template (ctr run --rm), its output as markers.
run_probe() {
    _t0=$(kata_rs_uptime)
    $T ctr run --rm --runtime $R --runtime-config-path "$CONF" --env "ID=$1" "$KATA_RS_IMAGE" "$1" sh -c "$PROBE"
    echo "$1-rc=$?"
    echo "$1-host-date=$(date +%s)"
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
# vmm_pid ID: the pid of the kata-vmm process of sandbox ID.
vmm_pid() {
    for _p in /proc/[0-9]*; do
        case "$({ tr '\0' ' ' < "$_p/cmdline"; } 2>/dev/null)" in
            *kata-vmm*"/sandboxes/$1/"*) echo "${_p#/proc/}"; return ;;
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
# The guest's clock: a restored guest's clock goes on from the template's save (kvmclock is
# restored as saved) until AfterRestore sets it. The template is made at least 15 s old here,
# so that a clock left alone is seen (the test allows the run's own seconds, a few).
_age=$(( $(date +%s) - $(stat -c %Y "$TPL/$KEY/state" 2>/dev/null || date +%s) ))
[ "$_age" -ge 15 ] || sleep $((15 - _age))
echo "t2-template-age=$(( $(date +%s) - $(stat -c %Y "$TPL/$KEY/state" 2>/dev/null || echo 0) ))"
run_probe t2
run_probe t3
echo "template-starts=$(from_template)"
echo "cold-starts=$(grep -c 'sandbox started by a cold boot in [0-9]* ms (template mode' "$LOG")"
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
echo "cold-starts-after=$(grep -c 'sandbox started by a cold boot in [0-9]* ms (template mode' "$LOG")"
wait_template 300; echo "template-remade-rc=$?"
echo "template-remade-size=$(stat -c %s "$TPL/$KEY/state" 2>/dev/null)"
stop t4
run_probe t5
echo "template-starts-after=$(from_template)"

echo "== network"
# A pod sandbox in a network namespace (as CRI makes it, a veth standing for CNI's eth0): its
# tap goes into a placeholder slot (the share has its own, bound in the template), AfterRestore
# binds it, and the network RPCs give the guest the pod's address.
NSF=/var/run/netns/tpl-pod
mkdir -p /var/run/netns && touch "$NSF" && unshare --net="$NSF" true
nsenter --net="$NSF" ip link add eth0 type veth \
    && nsenter --net="$NSF" ip addr add 10.99.0.2/24 dev eth0 \
    && nsenter --net="$NSF" ip link set eth0 up \
    && echo "netns=ok" || echo "netns=failed"
$T ctr run --rm --runtime $R --runtime-config-path "$CONF_COPY" --with-ns "network:$NSF" \
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
    # A file the container reads through virtio-fs (bounce mode, below).
    head -c 3000000 /dev/urandom > "$W/root-$p/bounce-r"
    ctr oci spec | sed \
        -e 's|"cwd": "/",|"cwd": "/", "args": ["sleep", "600"], "env": ["PATH=/bin:/usr/bin"],|' \
        -e "s|\"linux\": {|\"hostname\": \"tpl-pod-$p\", \"annotations\": {\"io.kubernetes.cri.container-type\": \"sandbox\", \"io.kubernetes.cri.sandbox-id\": \"tp-$p\"}, \"linux\": {|" \
        -e "s|\"type\": \"network\"|\"type\": \"network\", \"path\": \"$NSF\"|" \
        -e "s|\"cgroupsPath\": \"[^\"]*\"|\"cgroupsPath\": \"/kata-rs-test/tpl-$p\"|" \
        -e "s|\"path\": \"rootfs\"|\"path\": \"$W/root-$p\"|" \
        > "$W/tp-$p.json"
done
for p in a b; do
    { $T ctr run -d --runtime $R --runtime-config-path "$CONF_MAP" --config "$W/tp-$p.json" "tp-$p" \
        > "$W/tp-$p.out" 2>&1 < /dev/null; echo $? > "$W/tp-$p.rc"; } &
    eval "PID_$p=\$!"
done
wait "$PID_a" "$PID_b"
for p in a b; do
    echo "tp-$p-rc=$(cat "$W/tp-$p.rc")"
    $T ctr task exec --exec-id probe "tp-$p" sh -c 'echo "hostname=$(hostname)"; echo "addr=$(ip -4 -o addr show eth0 | awk "{ print \$4 }")"; echo "mac=$(cat /sys/class/net/eth0/address)"' \
        < /dev/null 2>&1 | sed "s/^/tp-$p-/"
    # With restore_memory = map the shim restores with --restore-memory map: guest RAM is
    # the template's memory file mapped copy-on-write (its data extents; no guest RAM memfd),
    # virtio-fs forwards through the bounce area's memfd (devices/virtio/fs/bounce.rs), and
    # the file data goes both ways through it, checked byte for byte.
    _vmm=$(vmm_pid "tp-$p")
    echo "tp-$p-vmm-maps-template=$(grep -c "$TPL/$KEY/memory" "/proc/$_vmm/maps" 2>/dev/null)"
    echo "tp-$p-vmm-maps-ram-memfd=$(grep -c 'memfd:kata-vmm-ram' "/proc/$_vmm/maps" 2>/dev/null)"
    echo "tp-$p-vmm-maps-bounce=$(grep -c 'memfd:kata-vmm-fs-bounce' "/proc/$_vmm/maps" 2>/dev/null)"
    echo "tp-$p-template-memory-kib=$(du -k "$TPL/$KEY/memory" | cut -f1)"
    $T ctr task exec --exec-id bounce "tp-$p" sh -c 'head -c 2500000 /dev/urandom > /bounce-w && sync && echo "w=$(md5sum < /bounce-w | cut -c1-32)"; echo "r=$(md5sum < /bounce-r | cut -c1-32)"' \
        < /dev/null 2>&1 | sed "s/^/tp-$p-guest-md5-/"
    echo "tp-$p-host-md5-w=$(md5sum < "$W/root-$p/bounce-w" | cut -c1-32)"
    echo "tp-$p-host-md5-r=$(md5sum < "$W/root-$p/bounce-r" | cut -c1-32)"
done
echo "pods-from-template=$(($(from_template) - _before))"
for p in a b; do
    stop "tp-$p"
    umount "/var/run/netns/tpl-$p" 2>/dev/null; rm -f "/var/run/netns/tpl-$p"
done
echo "secs-pods=$(seconds "$T_PODS")"

echo "== foreign"
# A template of another configuration under this one's key: the 256 MiB template copied to
# the key of the same boot with 384 MiB. kata-vmm refuses it naming the difference, the shim
# warns and removes it, the sandbox boots cold (with 384 MiB), and a right template is made.
T_FOREIGN=$(kata_rs_uptime)
FKEY=${KEY%%-*}-384m-1c
CONF384=/etc/kata-rs/template-384.toml
kata_rs_config initrd="$IMG" mem_mib=384 template_dir="$TPL" > "$CONF384"
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

echo "== image"
# The guest image is replaced (a new file at the same path, as a package upgrade does): the
# key changes, so the next sandbox boots cold and a template of the new image is made, which
# removes the old image's templates (both sizes); the sandbox after it starts from the new one.
T_IMAGE=$(kata_rs_uptime)
cp "$KATA_RS_SHARE/kata-rs-initrd.img" "$IMG.new" && mv "$IMG.new" "$IMG"
_cold=$(grep -c 'sandbox started by a cold boot in [0-9]* ms (template mode' "$LOG")
run_probe t8
echo "image-cold=$(($(grep -c 'sandbox started by a cold boot in [0-9]* ms (template mode' "$LOG") - _cold))"
IKEY=$(grep -a -oE 'sandbox started by a cold boot in [0-9]+ ms \(template mode, key [0-9a-f]+-256m-1c\)' "$LOG" \
    | tail -n 1 | sed -E 's/.*key ([^)]*)\)/\1/')
echo "image-key=$IKEY"
wait_template 300 "$IKEY"; echo "image-remade-rc=$?"
# The old image's templates go once the new one is made (remove_stale, right after it).
_end=$(kata_rs_deadline 30)
while kata_rs_before "$_end" && { [ -e "$TPL/$KEY" ] || [ -e "$TPL/$FKEY" ]; }; do sleep 0.5; done
_before=$(grep -c "sandbox started from template $IKEY" "$LOG")
run_probe t9
echo "image-from-new=$(($(grep -c "sandbox started from template $IKEY" "$LOG") - _before))"
echo "secs-image=$(seconds "$T_IMAGE")"
echo "secs-all=$(seconds "$T_ALL")"

echo "== times"
grep -a -oE 'sandbox started (by a cold boot|from template [0-9a-f]+-[0-9]+m-[0-9]+c) in [0-9]+ ms' "$LOG" | sed 's/^/start| /'
grep -a -oE 'template [0-9a-f]+-[0-9]+m-[0-9]+c made in [0-9]+ ms' "$LOG" | sed 's/^/made| /'
grep -a -oE 'restored VM: [^"]*' "$LOG" | sed 's/^/restore-steps| /'
# Each template VM saved with vsock idle (no host connection open): no transport reset at
# its restores. A busy save is made again (at most 3 saves).
grep -a -oE 'template VM saved: [^"]*' "$LOG" | sed 's/^/saved| /'
# Restored VMs hold host connections until the guest has handled the vsock transport reset
# (its event buffer posted again; at most 1 s): how often the bound ran out (exit summaries).
grep -a -oE "holds_expired=[0-9]+" "$LOG" | sort | uniq -c | sed "s/^ */holds| /"
grep -a -oE "virtio-fs bounce: [^\"]*" "$LOG" | sort | uniq -c | sed "s/^ */fs-bounce| /"
grep -a -E 'started VMM|virtiofsd|VM restored|restored VM|sandbox started|ready \(guest|template|shared in' "$LOG" | cut -c1-260 | sed 's/^/timeline| /'
grep -a -iE 'warn.*template' "$LOG" | cut -c1-400 | sed 's/^/template-warning| /'

echo "== after"
# No VMM died of its seccomp filter (SIGSYS), at its exit either.
echo "vmm-sigsys=$(grep -c 'VMM was killed by signal 31' "$LOG")"
# Every shim is gone (one still making a template would wait for it).
_end=$(kata_rs_deadline 60)
while kata_rs_before "$_end" && shims_running; do sleep 0.5; done
echo "template-dir=$(ls -A "$TPL" | tr '\n' ',')"
echo "containers=$(ctr container ls -q | wc -l)"
rm -f "$IMG"
kata_rs_leftovers
echo "leftovers-rc=$?"
