# Template soak (not part of `make test`; run by hand on an idle host, docs/templates.md):
#   tests/node-run --timeout 1700 tests/scripts/template-soak.sh [copy|map] [RUNS]
# One sandbox boots cold and makes a template; then RUNS sandboxes (default 25) start from it
# one after the other with factory.restore_memory = $1 (default map), each writing 4 MiB
# through the share, dropping the guest's caches and reading it back six times (md5 compared
# to what it wrote). A run not done after 90 s is dumped: the guest console's last lines and
# the VMM's threads (state, kernel wait channel). Prints one line per run and a summary.
R=io.containerd.kata.v2
CONF=/etc/kata-rs/soak.toml
TPL=/var/lib/kata-rs/templates
LOG=$KATA_RS_CONTAINERD_LOG
mkdir -p /etc/kata-rs
kata_rs_config template_dir="$TPL" restore_memory="${1:-map}" > "$CONF" || exit 2
N=${2:-25}
W='dd if=/dev/urandom of=/big bs=64k count=64 2>/dev/null; a=$(md5sum /big | cut -c1-32); i=0; bad=0
while [ $i -lt 6 ]; do sync; echo 3 > /proc/sys/vm/drop_caches; b=$(md5sum /big | cut -c1-32)
[ "$a" = "$b" ] || bad=$((bad + 1)); i=$((i + 1)); done; echo "md5-bad=$bad"'
i=0 ok=0 stuck=0 last=0
while [ $i -lt "$N" ]; do
    t0=$(kata_rs_uptime)
    timeout -k 10 200 ctr run --rm --privileged --runtime $R --runtime-config-path "$CONF" \
        "$KATA_RS_IMAGE" "soak$i" sh -c "$W" > "$KATA_RS_WORK/soak.out" 2>&1 &
    cp=$!
    w=0
    while kill -0 $cp 2>/dev/null && [ $w -lt 900 ]; do sleep 0.1; w=$((w + 1)); done
    if kill -0 $cp 2>/dev/null; then
        stuck=$((stuck + 1))
        echo "run $i stuck after 90 s"
        tail -n 15 "/var/log/kata-rs/console/soak$i.log" 2>&1 | sed "s/^/  guest$i| /"
        for p in /proc/[0-9]*; do
            case "$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null)" in
                *kata-vmm*"soak$i"*)
                    for t in "$p"/task/*; do
                        echo "  thread$i| $(cat "$t/comm") $(cut -d' ' -f3 "$t/stat") $(cat "$t/wchan")"
                    done ;;
            esac
        done
    fi
    wait $cp
    rc=$?
    [ $rc = 0 ] && grep -q '^md5-bad=0$' "$KATA_RS_WORK/soak.out" && ok=$((ok + 1))
    echo "run $i rc=$rc seconds=$(awk -v a="$t0" -v b="$(kata_rs_uptime)" 'BEGIN { printf "%.1f", b - a }') out=$(tr '\n' ' ' < "$KATA_RS_WORK/soak.out" | cut -c1-200)"
    n=$(wc -l < "$LOG")
    tail -n +$((last + 1)) "$LOG" | grep -E 'bounce|holds_expired=[1-9]|killed by signal|level=error|sandbox started' \
        | cut -c1-300 | sed "s/^/  log$i| /"
    last=$n
    i=$((i + 1))
done
echo "soak: ok=$ok stuck=$stuck of $N (restore_memory=${1:-map})"
kata_rs_leftovers
