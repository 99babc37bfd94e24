# vsock stress, VMM only (kata-vmm's hybrid vsock: the node's clients go through the VMM's
# Unix socket and the CONNECT handshake): many concurrent connections on several ports, large
# transfers, a slow reader (back-pressure) and a bad
# header, every byte verified (tests/vsock-stress, `kata-vsock-stress`, static musl).
# The guest is the installed agent image plus an overlay initramfs (/kt: the node's static
# busybox, the stress tool and `vsinit`, started with rdinit=/kt/vsinit): it starts a server on
# guest ports 5001-5004, then execs the agent. Guest-initiated connections are refused by the
# hybrid vsock device (RST): there is no guest -> node direction any more. Once the agent is ready the node runs its
# clients against the guest, all at once: N connections x B bytes each way spread over 4 ports,
# one BIG-byte stream (one-way, client to server), one slow-reader stream (one-way: the server
# sleeps SLOW_MS per 16 KiB read, the writer must block) and one bad header. Then agent
# shutdown, VMM exit status, leftovers. Every summary line becomes markers `WHO-KEY=VALUE` (WHO: h2g-many, h2g-big,
# h2g-slow, h2g-bad on the node; gserve and g2h-probe, a refused guest -> node connect, in the
# guest). Checked by tests/tests/vmm_vsock.rs.
#   $1: the tool (through KATA_RS_NODE_EXTRA)  $2: N (64)  $3: B (256K)  $4: BIG (64M)
#   $5: slow stream bytes (1M)  $6: SLOW_MS (50)
S="$KATA_RS_PAYLOAD/extra$1"
CONNS=${2:-64}
BYTES=${3:-256K}
BIG=${4:-64M}
SLOW=${5:-1M}
SLOW_MS=${6:-50}
CID=57
BB=/bin/busybox
LOG=$KATA_RS_WORK/vmm-vsock-console.log
# Connections each server must see: N + big + slow + bad header.
EXPECT=$((CONNS + 3))
t0=$(kata_rs_uptime)
secs() { awk -v a="$t0" -v b="$(kata_rs_uptime)" 'BEGIN { printf "%.1f", b - a }'; }
# markers WHO LINE: every KEY=VALUE word of a summary line as WHO-KEY=VALUE.
markers() { echo "$2" | tr -d '\r' | tr ' ' '\n' | grep '=' | sed "s/^/$1-/"; }
# guest_wait PATTERN SECS: until the console log has PATTERN, SECS pass or the VMM is gone.
guest_wait() {
    _i=0
    while [ $_i -lt $(($2 * 10)) ]; do
        grep -aqE "$1" "$LOG" && return 0
        kill -0 $VPID 2>/dev/null || return 1
        sleep 0.1; _i=$((_i + 1))
    done
    return 1
}

echo "== overlay"
[ -x "$S" ] || { echo "no stress tool at $S"; exit 1; }
O=$KATA_RS_WORK/vsock-overlay
rm -rf "$O"; mkdir -p "$O/kt"
cp "$BB" "$O/kt/busybox"
cp "$S" "$O/kt/kata-vsock-stress"
cat > "$O/kt/vsinit" <<EOF
#!/kt/busybox sh
S=/kt/kata-vsock-stress
echo "kt-vsock: starting"
\$S serve --ports 5001,5002,5003,5004 --expect $EXPECT --deadline 900 --tag kvs-gserve &
\$S probe --cid 2 --port 6001 --tag kvs-g2h-probe &
exec /init
EOF
chmod 0755 "$O/kt/vsinit"
(cd "$O" && $BB find . -mindepth 1 | $BB cpio -o -H newc 2>/dev/null) > "$KATA_RS_WORK/vsock-overlay.cpio"
echo "overlay-bytes=$(wc -c < "$KATA_RS_WORK/vsock-overlay.cpio")"
echo "sizes conns=$CONNS bytes=$BYTES big=$BIG slow=$SLOW slow_ms=$SLOW_MS"

UDS=$KATA_RS_WORK/vmm-vsock.vsock
echo "== boot"
: > "$LOG"
kata-vmm --kernel "$KATA_RS_SHARE/vmlinux" --initrd "$KATA_RS_SHARE/kata-rs-initrd.img" \
    --initrd "$KATA_RS_WORK/vsock-overlay.cpio" --mem-mib 512 --vcpus 2 --vsock-cid "$CID" --vsock-uds "$UDS" \
    --console-log "$LOG" --virtio-console --cmdline "rdinit=/kt/vsinit console=hvc0" \
    > vmm-vsock.out 2>&1 &
VPID=$!
if guest_wait 'kata-rs-agent: ready' 300; then r=yes; else r=no; fi
echo "agent-ready=$r after $(secs) s"
echo "guest-started=$(grep -q 'kt-vsock: starting' "$LOG" && echo yes || echo no)"

echo "== node clients"
t1=$(kata_rs_uptime)
"$S" client --uds "$UDS" --ports 5001,5002,5003,5004 --conns $CONNS --bytes $BYTES --seed 21 \
    --tag kvs-h2g-many > h2g-many.out 2>&1 &
P1=$!
"$S" client --uds "$UDS" --ports 5001 --conns 1 --bytes $BIG --down-bytes 0 --seed 22 --tag kvs-h2g-big \
    > h2g-big.out 2>&1 &
P2=$!
"$S" client --uds "$UDS" --ports 5002 --conns 1 --bytes $SLOW --down-bytes 0 --slow-ms $SLOW_MS \
    --seed 23 --tag kvs-h2g-slow > h2g-slow.out 2>&1 &
P3=$!
"$S" bad-header --uds "$UDS" --port 5003 --tag kvs-h2g-bad > h2g-bad.out 2>&1 &
P4=$!
for w in "many $P1" "big $P2" "slow $P3" "bad $P4"; do
    set -- $w
    wait "$2"; echo "h2g-$1-rc=$?"
done
echo "h2g-seconds=$(awk -v a="$t1" -v b="$(kata_rs_uptime)" 'BEGIN { printf "%.1f", b - a }')"
for w in many big slow bad; do
    sed 's/^/h2g-out| /' h2g-$w.out
    markers "h2g-$w" "$(grep -E "^kvs-h2g-$w: (client|bad-header) " h2g-$w.out | tail -n 1)"
done

echo "== guest -> node (refused)"
guest_wait '^kvs-g2h-probe: probe ' 60 || echo "g2h-probe: no summary"
markers g2h-probe "$(grep -aE '^kvs-g2h-probe: probe ' "$LOG" | tail -n 1)"

echo "== servers"
guest_wait '^kvs-gserve: server ' 120 || echo "gserve: no summary"
grep -aE '^kvs-gserve: ' "$LOG" | head -n 40 | sed 's/^/gserve-out| /'
markers gserve "$(grep -aE '^kvs-gserve: server ' "$LOG" | tail -n 1)"
echo "stress-seconds=$(secs)"

echo "== shutdown"
timeout 120 kata-agent-ctl --uds "$UDS" shutdown
echo "shutdown-rc=$?"
kata_rs_wait_exit $VPID 60 vmm-rc
echo "total=$(secs) s"
sed 's/^/vmm-stderr| /' vmm-vsock.out
rm -f "$UDS"
grep -avE '^kvs-' "$LOG" | tail -n 15 | sed 's/^/console-tail| /'
kata_rs_leftovers
echo "leftovers-rc=$?"
