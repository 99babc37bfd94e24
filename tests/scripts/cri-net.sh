# The CRI pod-network test: the CRI containerd (kata_rs_start_cri_containerd) with a CNI
# bridge network (Debian's containernetworking-plugins: bridge + host-local + loopback,
# 10.88.0.0/16 on bridge kata-rs-br0, gateway 10.88.0.1 on the node) and one pod per handler
# (runc, kata) with its own network namespace, driven at the same time by the CRI client
# (tests/cri, `--pod-net`). $1: the client's host path, $2: the host's CNI plugin directory
# (default /usr/lib/cni), $3: the host's iproute2 `tc` (busybox tc cannot show ingress
# filters; default: busybox's, then the filter check fails), $4: kata-rs-task-stats (tests/cri,
# asks a shim for Task.Stats); all come through KATA_RS_NODE_EXTRA.
# While both pods run: the node fetches each pod's page via the pod IP, and looks into each
# pod's network namespace (the kata one has tap0_kata and ingress qdiscs with redirect filters
# on eth0 and the tap; eth0's MAC is what the guest's eth0 shows; every kata task's Task.Stats
# carries the guest eth0's counters, which moved with that traffic). The clients fetch each
# other's page (runc pod <-> kata pod over the bridge). After StopPodSandbox/RemovePodSandbox:
# no network namespace, no tap, no kata-rs leftovers. tests/tests/cri_net.rs checks the markers.
CRI=$KATA_RS_PAYLOAD/extra$1
CNI=$KATA_RS_PAYLOAD/extra${2:-/usr/lib/cni}
W=$KATA_RS_WORK
NETNS_DIR=/var/run/netns
TC=tc
[ -n "${3:-}" ] && [ -x "$KATA_RS_PAYLOAD/extra$3" ] && TC=$KATA_RS_PAYLOAD/extra$3
STATS=$KATA_RS_PAYLOAD/extra${4:-/nonexistent}
[ -x "$CRI" ] || { echo "no CRI client at $CRI (pass its host path as \$1 and in KATA_RS_NODE_EXTRA)" >&2; exit 1; }
for p in bridge host-local loopback; do
    [ -x "$CNI/$p" ] || { echo "no CNI plugin $CNI/$p (apt-get install containernetworking-plugins; pass /usr/lib/cni as \$2 and in KATA_RS_NODE_EXTRA)" >&2; exit 1; }
done
t0=$(kata_rs_uptime)

echo "== cri containerd"
# kata_rs_start_cri_containerd points CRI at $W/cri/cni/{bin,net.d}; fill them first.
mkdir -p "$W/cri/cni/bin" "$W/cri/cni/net.d" "$W/podnet"
cp "$CNI/bridge" "$CNI/host-local" "$CNI/loopback" "$W/cri/cni/bin/"
cat > "$W/cri/cni/net.d/10-kata-rs.conflist" <<'JSON'
{"cniVersion": "0.4.0", "name": "kata-rs-net", "plugins": [
  {"type": "bridge", "bridge": "kata-rs-br0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]}}
]}
JSON
if ! kata_rs_start_cri_containerd; then echo "cri-containerd=failed"; exit 1; fi
echo "cri-containerd=ok"

pids=
for h in runc kata; do
    case $h in runc) port=18080 ;; kata) port=18081 ;; esac
    mkdir -p "$W/cri-logs/$h"
    timeout -k 30 900 "$CRI" --socket "$KATA_RS_CRI_SOCKET" --handler "$h" --image "$KATA_RS_IMAGE" \
        --log-dir "$W/cri-logs/$h" --port "$port" --cgroup-parent "/kata-rs-test/cri-$h" --timeout 300 \
        --pod-net "$W/podnet" > "$W/cri-$h.out" 2>&1 &
    pids="$pids $!"
done

echo "== node"
# Both pods up (each client wrote HANDLER.ip once its containers ran), at most 600 s.
i=0
while [ ! -s "$W/podnet/runc.ip" ] || [ ! -s "$W/podnet/kata.ip" ]; do
    if [ $i -ge 2400 ]; then echo "pods-up=timeout"; break; fi
    sleep 0.25; i=$((i + 1))
done
[ $i -lt 2400 ] && echo "pods-up=ok"
for h in runc kata; do
    [ -s "$W/podnet/$h.ip" ] || continue
    read -r ip port < "$W/podnet/$h.ip"
    echo "node-sees-$h-ip=$ip"
    ok=failed
    for _t in 1 2 3 4 5 6 7 8 9 10; do
        body=$(printf 'GET / HTTP/1.0\r\n\r\n' | timeout 10 nc -w 5 "$ip" "$port" 2>&1)
        case $body in *"hello from the server of pod $h"*) ok=ok; break ;; esac
        sleep 1
    done
    echo "node-fetch-$h=$ok"
    echo "node-fetch-$h-body| $(echo "$body" | tail -n 1)"
done
# The pods' network namespaces: which one has the kata tap, its qdiscs and filters.
ns_total=0; ns_tap=0
for ns in "$NETNS_DIR"/*; do
    [ -e "$ns" ] || continue
    ns_total=$((ns_total + 1))
    links=$(nsenter --net="$ns" ip -o link show 2>&1)
    echo "$links" | sed "s#^#netns-links-${ns##*/}| #"
    case $links in *tap0_kata*) ;; *) continue ;; esac
    ns_tap=$((ns_tap + 1))
    # (not /sys/class/net: sysfs shows the namespace it was mounted in)
    echo "kata-netns-eth0-mac=$(nsenter --net="$ns" ip -o link show eth0 | sed -n 's/.*link\/ether \([0-9a-f:]*\).*/\1/p')"
    for d in eth0 tap0_kata; do
        q=$(nsenter --net="$ns" "$TC" qdisc show dev "$d" 2>&1)
        f=$(nsenter --net="$ns" "$TC" filter show dev "$d" parent ffff: 2>&1)
        echo "$q" | sed "s/^/kata-netns-qdisc-$d| /"
        echo "$f" | sed "s/^/kata-netns-filter-$d| /"
        case $q in *ingress*) echo "kata-netns-ingress-$d=1" ;; *) echo "kata-netns-ingress-$d=0" ;; esac
        case $f in *"mirred (Egress Redirect to device"*) echo "kata-netns-filter-$d=1" ;; *) echo "kata-netns-filter-$d=0" ;; esac
    done
done
echo "netns-running=$ns_total"
echo "netns-with-tap=$ns_tap"
# Task.Stats straight from each kata task's shim (what `ctr task metrics` fetches; containerd
# 1.6 cannot print cgroup2 network counters): the guest's eth0 with traffic both ways.
kata_tasks=0; kata_eth0=0
for d in "$W/cri/state/io.containerd.runtime.v2.task/k8s.io"/*/; do
    [ -f "$d/address" ] || continue
    id=$(basename "$d")
    ctr --address "$KATA_RS_CRI_SOCKET" -n k8s.io container info "$id" 2>/dev/null | grep -q '"io.containerd.kata.v2"' || continue
    kata_tasks=$((kata_tasks + 1))
    st=$(timeout 60 "$STATS" "$(cat "$d/address")" "$id" 2>&1)
    echo "$st" | sed "s/^/task-stats-${id%"${id#????????????}"}| /"
    echo "$st" | grep -Eq '^net\| eth0 rx_bytes=[1-9][0-9]* rx_packets=[1-9][0-9]* .* tx_bytes=[1-9][0-9]* tx_packets=[1-9]' && kata_eth0=$((kata_eth0 + 1))
done
echo "kata-tasks=$kata_tasks"
echo "kata-tasks-eth0-stats=$kata_eth0"
touch "$W/podnet/release"

rc=0
for p in $pids; do wait "$p" || rc=1; done
for h in runc kata; do
    echo "== $h"
    cat "$W/cri-$h.out"
done

echo "== after"
echo "cri-kata-agent-ready=$(grep -c 'msg="agent .* ready (guest kernel' "$KATA_RS_CRI_LOG")"
echo "net-setup-logged=$(grep -c 'pod network: eth0 <-> tap0_kata' "$KATA_RS_CRI_LOG")"
echo "net-guest-logged=$(grep -c 'pod network: guest eth0' "$KATA_RS_CRI_LOG")"
# The kata pod's port forwarder listened in its namespace for the guest's servers.
echo "pf-listen-logged=$(grep -c 'port forwarding: listening on 127.0.0.1' "$KATA_RS_CRI_LOG")"
echo "net-teardown-logged=$(grep -c 'pod network: tap tap0_kata and tc filters removed' "$KATA_RS_CRI_LOG")"
grep 'pod network' "$KATA_RS_CRI_LOG" | sed 's/^/shim-log| /'
echo "cri-containers=$(ctr --address "$KATA_RS_CRI_SOCKET" -n k8s.io container ls -q | wc -l)"
echo "cri-tasks=$(ctr --address "$KATA_RS_CRI_SOCKET" -n k8s.io task ls -q | wc -l)"
n=0
for ns in "$NETNS_DIR"/*; do [ -e "$ns" ] && { echo "leftover-netns| $ns"; n=$((n + 1)); }; done
echo "netns-left=$n"
# A tap anywhere: the node's own namespace, or a namespace still mounted somewhere.
taps=$(ip -o link show 2>/dev/null | grep -c tap0_kata)
for ns in "$NETNS_DIR"/*; do
    [ -e "$ns" ] && taps=$((taps + $(nsenter --net="$ns" ip -o link show 2>/dev/null | grep -c tap0_kata)))
done
echo "taps-left=$taps"
kata_rs_cri_finish $rc "$t0"
exit 0
