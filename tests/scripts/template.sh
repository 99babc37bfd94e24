# VM templates ([factory] template = true, docs/templates.md) through ctr, one node boot:
# the first sandbox boots cold and a template of its VM configuration appears; the next two
# start from it (the shim's log says so), each runs its container with the right output and
# draws different random numbers; a truncated template state file is refused, the sandbox
# still starts (cold) and a new template is made, which the next sandbox starts from;
# nothing is left. The Rust test (tests/tests/template.rs) checks the markers.
R=io.containerd.kata.v2
CONF=/etc/kata-rs/template.toml
TPL=/var/lib/kata-rs/templates
LOG=$KATA_RS_CONTAINERD_LOG
{ kata_rs_config; printf '[factory]\ntemplate = true\ntemplate_dir = "%s"\n' "$TPL"; } > "$CONF"
T="timeout -k 30 300"
# The probe each container runs: its output, then two random draws from the guest kernel.
PROBE='echo "$ID-hello=hi-from-$ID"; echo "$ID-uuid=$(cat /proc/sys/kernel/random/uuid)"; echo "$ID-urandom=$(head -c16 /dev/urandom | od -An -tx1 | tr -d " \n")"'
# template_key: the name of the (one) template directory, empty if none.
template_key() { ls "$TPL" 2>/dev/null | grep -E '^[0-9a-f]{16}-[0-9]+m-[0-9]+c$' | head -n1; }
# wait_template SECS: until a template with a state file bigger than 4 KiB is there (1 at
# once when the shim says it could not make one, e.g. after a rig fault of its template VM).
wait_template() {
    _end=$(kata_rs_deadline "$1")
    _failed=$(grep -c 'could not be made' "$LOG")
    while kata_rs_before "$_end"; do
        [ "$(grep -c 'could not be made' "$LOG")" -gt "$_failed" ] && return 1
        _k=$(template_key)
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
    echo "$1-seconds=$(awk -v a="$_t0" -v b="$(kata_rs_uptime)" 'BEGIN { printf "%.1f", b - a }')"
}
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
_t0=$(kata_rs_uptime)
$T ctr run -d --runtime $R --runtime-config-path "$CONF" "$KATA_RS_IMAGE" t1 sleep 600 >/dev/null
echo "t1-rc=$?"
echo "t1-seconds=$(awk -v a="$_t0" -v b="$(kata_rs_uptime)" 'BEGIN { printf "%.1f", b - a }')"
wait_template 300; echo "template-made-rc=$?"
KEY=$(template_key)
echo "template-key=$KEY"
echo "template-dir-mode=$(stat -c %a "$TPL/$KEY" 2>/dev/null)"
echo "template-files=$(ls "$TPL/$KEY" 2>/dev/null | tr '\n' ',')"
echo "template-memory-kib=$(du -k "$TPL/$KEY/memory" 2>/dev/null | cut -f1)"
stop t1

echo "== from template"
run_probe t2
run_probe t3
echo "template-starts=$(grep -c 'sandbox started from template' "$LOG")"
echo "cold-starts=$(grep -c 'sandbox started by a cold boot' "$LOG")"

echo "== truncated"
# A state file cut short: kata-vmm refuses it, the shim removes the template and boots cold.
dd if=/dev/null of="$TPL/$KEY/state" bs=1 seek=100 2>/dev/null
echo "truncated-size=$(stat -c %s "$TPL/$KEY/state")"
_t0=$(kata_rs_uptime)
$T ctr run -d --runtime $R --runtime-config-path "$CONF" "$KATA_RS_IMAGE" t4 sleep 600 >/dev/null
echo "t4-rc=$?"
echo "t4-seconds=$(awk -v a="$_t0" -v b="$(kata_rs_uptime)" 'BEGIN { printf "%.1f", b - a }')"
echo "t4-status=$(kata_rs_task_status t4)"
grep -a "template $KEY failed" "$LOG" | tail -n 1 | cut -c1-600 | sed 's/^/refused-log| /'
echo "refused=$(grep -c "template $KEY failed, removed; cold boot instead" "$LOG")"
echo "cold-starts-after=$(grep -c 'sandbox started by a cold boot' "$LOG")"
wait_template 300; echo "template-remade-rc=$?"
echo "template-remade-size=$(stat -c %s "$TPL/$KEY/state" 2>/dev/null)"
stop t4
run_probe t5
echo "template-starts-after=$(grep -c 'sandbox started from template' "$LOG")"

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
echo "template-starts-net=$(grep -c 'sandbox started from template' "$LOG")"

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
