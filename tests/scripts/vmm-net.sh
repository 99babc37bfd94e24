# kata-vmm --net (virtio-net on a tap), VMM only: kata-vmm creates the tap kt-net0 (TUNSETIFF)
# before its jail; the node gives the tap 10.213.0.1/24 and brings it up. The guest is the
# installed agent image plus a small overlay initramfs (/kt: the node's static busybox and
# `netinit`, started with rdinit=/kt/netinit): it sets eth0 to 10.213.0.2/24 (the guest kernel
# has no CONFIG_IP_PNP for ip=, and the agent only brings up lo), starts busybox httpd serving
# a 1.9 MB file, then execs the agent as PID 1. From the node: ping, ping with 1400-byte and
# fragmented 8000-byte payloads, the file over TCP (sha256), agent shutdown, the tap gone with
# the VMM. The same boot has --virtio-console and console=hvc0: the guest's console lines
# (netinit's, the agent's ready line) reach the log through hvc0. A 16 MiB read-only --disk
# (/dev/vda) is read once by netinit with dd. The guest reports each virtio device's
# VIRTIO_RING_F_EVENT_IDX bit, kata-vmm's exit summary the kicks and interrupts of its devices
# (notification suppression). Markers are checked by tests/tests/vmm.rs.
# Second argument `no-event-idx`: the same run with KATA_VMM_NO_EVENT_IDX=1 (for comparison).
CID=${1:-52}
MODE=${2:-}
TAP=kt-net0
HOST_IP=10.213.0.1
GUEST_IP=10.213.0.2
MAC=02:00:0a:d5:00:02
BB=/bin/busybox
LOG=$KATA_RS_WORK/vmm-net-console.log
t0=$(kata_rs_uptime)
secs() { awk -v a="$t0" -v b="$(kata_rs_uptime)" 'BEGIN { printf "%.1f", b - a }'; }

echo "== overlay"
O=$KATA_RS_WORK/net-overlay
rm -rf "$O"; mkdir -p "$O/kt/www"
cp "$BB" "$O/kt/busybox"
cat > "$O/kt/netinit" <<EOF
#!/kt/busybox sh
B=/kt/busybox
\$B seq 1 300000 > /kt/www/blob
\$B ip link set eth0 up && \$B ip addr add $GUEST_IP/24 dev eth0 && r=up || r=failed
echo "kt-net: eth0 \$r mac=\$(\$B ip link show eth0 | \$B sed -n 's/.*link.ether \\([0-9a-f:]*\\).*/\\1/p')"
\$B mkdir -p /kt/sys && \$B mount -t sysfs sysfs /kt/sys
echo "kt-console: active=\$(\$B cat /kt/sys/class/tty/console/active | \$B tr ' ' ,)"
for d in /kt/sys/bus/virtio/devices/*; do
    echo "kt-virtio: \$(\$B basename \$d) device=\$(\$B cat \$d/device) event_idx=\$(\$B cut -c30 \$d/features)"
done
if [ -e /kt/sys/block/vda/dev ]; then
    \$B mknod /kt/vda b \$(\$B tr : ' ' < /kt/sys/block/vda/dev) && \$B mknod /kt/null c 1 3
    echo "kt-blk: \$(\$B dd if=/kt/vda of=/kt/null bs=64k 2>&1 | \$B tail -n 1)"
    \$B rm -f /kt/vda /kt/null
fi
\$B umount /kt/sys
\$B httpd -f -p 8080 -h /kt/www &
exec /init
EOF
chmod 0755 "$O/kt/netinit"
(cd "$O" && $BB find . -mindepth 1 | $BB cpio -o -H newc 2>/dev/null) > "$KATA_RS_WORK/net-overlay.cpio"
echo "overlay-bytes=$(wc -c < "$KATA_RS_WORK/net-overlay.cpio")"
echo "tap-before=$([ -e /sys/class/net/$TAP ] && echo yes || echo no)"
DISK=$KATA_RS_WORK/net-disk.img
$BB dd if=/dev/zero of="$DISK" bs=1M count=16 2>/dev/null
ENV=
[ "$MODE" = no-event-idx ] && ENV=KATA_VMM_NO_EVENT_IDX=1
echo "mode=${MODE:-event-idx}"

echo "== boot"
: > "$LOG"
env $ENV kata-vmm --kernel "$KATA_RS_SHARE/vmlinux" --initrd "$KATA_RS_SHARE/kata-rs-initrd.img" \
    --initrd "$KATA_RS_WORK/net-overlay.cpio" --mem-mib 256 --vcpus 1 --vsock-cid "$CID" --vsock-uds "$KATA_RS_WORK/vmm-net.vsock" \
    --console-log "$LOG" --net "tap=$TAP,mac=$MAC" --virtio-console --disk "$DISK,ro" \
    --cmdline "rdinit=/kt/netinit console=hvc0" \
    > vmm-net.out 2>&1 &
VPID=$!
# The tap exists once kata-vmm is set up (before the guest boots).
i=0; while [ ! -e /sys/class/net/$TAP ] && kill -0 $VPID 2>/dev/null && [ $i -lt 300 ]; do
    sleep 0.1; i=$((i + 1)); done
echo "tap-created=$([ -e /sys/class/net/$TAP ] && echo yes || echo no)"
$BB ip addr add $HOST_IP/24 dev $TAP && $BB ip link set $TAP up
echo "tap-config-rc=$?"
ready=no i=0
while [ $i -lt 1800 ]; do
    if grep -q 'kata-rs-agent: ready' "$LOG" 2>/dev/null; then ready=yes; break; fi
    kill -0 $VPID 2>/dev/null || break
    sleep 0.1; i=$((i + 1))
done
echo "agent-ready=$ready after $(secs) s"
echo "guest-eth0=$(sed -n 's/^kt-net: eth0 \([a-z]*\).*/\1/p' "$LOG" | head -n 1)"
# With console=hvc0 last, /dev/console (init's output, the agent's ready line) is the
# virtio-console: these lines reach the log through it.
echo "guest-console=$(sed -n 's/^kt-console: active=\([A-Za-z0-9,]*\).*/\1/p' "$LOG" | head -n 1)"
echo "guest-mac=$(sed -n 's/^kt-net: eth0 [a-z]* mac=\([0-9a-f:]*\).*/\1/p' "$LOG" | head -n 1)"
# Each virtio device's VIRTIO_RING_F_EVENT_IDX bit as the guest negotiated it, by device id
# (0x0001 net, 0x0002 blk, 0x0003 console, 0x0004 rng, 0x0013 vsock).
echo "guest-event-idx=$(sed -n 's/^kt-virtio: [a-z0-9]* device=\(0x[0-9a-f]*\) event_idx=\([01]\).*/\1:\2/p' "$LOG" | sort | tr '\n' ',' | sed 's/,$//')"
echo "guest-dd=$(sed -n 's/^kt-blk: //p' "$LOG" | head -n 1)"
[ "$(readlink /proc/$VPID/ns/net)" != "$(readlink /proc/self/ns/net)" ] && own=yes || own=no
echo "vmm-own-netns=$own"
echo "vmm-seccomp=$(sed -n 's/^Seccomp:[[:space:]]*//p' /proc/$VPID/status)"

echo "== ping"
$BB ping -c 3 -w 60 $GUEST_IP > ping.out 2>&1
echo "ping-rc=$?"
sed 's/^/ping| /' ping.out
echo "ping-loss=$(sed -n 's/.* \([0-9]*\)% packet loss.*/\1/p' ping.out)"

echo "== bulk"
# 1400-byte payloads back to back (-A: the next as soon as the reply is in), then 8000-byte
# ones that IP fragments into 6 frames each way.
t1=$(kata_rs_uptime)
$BB ping -A -q -c 200 -s 1400 -w 300 $GUEST_IP > ping1400.out 2>&1
echo "ping1400-rc=$?"
sed 's/^/ping1400| /' ping1400.out
echo "ping1400-loss=$(sed -n 's/.* \([0-9]*\)% packet loss.*/\1/p' ping1400.out)"
$BB ping -A -q -c 20 -s 8000 -w 300 $GUEST_IP > ping8000.out 2>&1
echo "ping8000-rc=$?"
sed 's/^/ping8000| /' ping8000.out
echo "ping8000-loss=$(sed -n 's/.* \([0-9]*\)% packet loss.*/\1/p' ping8000.out)"
echo "ping-bulk-seconds=$(awk -v a="$t1" -v b="$(kata_rs_uptime)" 'BEGIN { printf "%.1f", b - a }')"
t1=$(kata_rs_uptime)
printf 'GET /blob HTTP/1.0\r\n\r\n' | timeout 300 $BB nc $GUEST_IP 8080 > http.out 2>http.err
echo "http-rc=$?"
head -n 1 http.out | tr -d '\r' | sed 's/^/http-status| /'
sed 's/^/http-err| /' http.err
got=$(sed '1,/^\r$/d' http.out | $BB sha256sum | cut -c1-64)
want=$($BB seq 1 300000 | $BB sha256sum | cut -c1-64)
echo "http-bytes=$(sed '1,/^\r$/d' http.out | wc -c) want $($BB seq 1 300000 | wc -c)"
[ "$got" = "$want" ] && echo "http-sha=match" || echo "http-sha=MISMATCH"
echo "http-seconds=$(awk -v a="$t1" -v b="$(kata_rs_uptime)" 'BEGIN { printf "%.1f", b - a }')"
for c in rx_packets rx_bytes tx_packets tx_bytes rx_dropped tx_dropped; do
    echo "tap-$c=$(cat /sys/class/net/$TAP/statistics/$c)"
done

echo "== shutdown"
timeout 120 kata-agent-ctl --uds "$KATA_RS_WORK/vmm-net.vsock" shutdown
echo "shutdown-rc=$?"
kata_rs_wait_exit $VPID 60 vmm-rc
echo "tap-left=$([ -e /sys/class/net/$TAP ] && echo yes || echo no)"
# kata-vmm's exit summary: frames its virtio-net device delivered and dropped.
for c in rx_frames rx_dropped tx_frames tx_dropped bad_chains; do
    echo "vmm-$c=$(sed -n "s/^kata-vmm: virtio-net: .*\b$c=\([0-9]*\).*/\1/p" vmm-net.out | head -n 1)"
done
# Notification counters of each of kata-vmm's own devices (see vmm/README.md, device model).
rep() { sed -n "s/^kata-vmm: virtio-$1: .*\b$2=\([0-9,]*\).*/\1/p" vmm-net.out | head -n 1; }
for d in net blk console rng; do
    for c in event_idx kicks queue_kicks interrupts rekicks; do
        echo "vmm-$d-$c=$(rep $d $c)"
    done
done
echo "vmm-blk-read_bytes=$(rep blk read_bytes)"
NET_BYTES=$(awk -v a="$(rep net rx_bytes)" -v b="$(rep net tx_bytes)" 'BEGIN { print a + b }')
echo "vmm-net-bytes=$NET_BYTES"
per_mb() { awk -v n="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", n * 1048576 / b; else print "-" }'; }
echo "per-mb: blk kicks=$(per_mb "$(rep blk kicks)" "$(rep blk read_bytes)")" \
    "interrupts=$(per_mb "$(rep blk interrupts)" "$(rep blk read_bytes)");" \
    "net kicks=$(per_mb "$(rep net kicks)" "$NET_BYTES")" \
    "interrupts=$(per_mb "$(rep net interrupts)" "$NET_BYTES")"
echo "total=$(secs) s"
sed 's/^/vmm-stderr| /' vmm-net.out
grep -E 'kt-net|kt-console|virtio|eth0|hvc' "$LOG" | sed 's/^/console| /'
tail -n 10 "$LOG" | sed 's/^/console-tail| /'
kata_rs_leftovers
echo "leftovers-rc=$?"
