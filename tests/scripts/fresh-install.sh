# A fresh node (issue 12): everything the harness installed for kata-rs is removed, the node
# has a stock containerd configuration (version 2, CRI plugin, no kata handler), and then only
# the built artifacts and `kata-rs install` make it run kata: `kata-rs check` fails before and
# passes after, a second install changes nothing, a containerd started on the merged
# configuration runs a kata container (`ctr run --runtime io.containerd.kata.v2`) and a kata
# pod through CRI (RuntimeClass handler `kata`), and `kata-rs uninstall` leaves the node's files
# as they were (containerd's configuration byte for byte). Args: KATA_RS CRI_CLIENT (host
# paths, in the payload's extra/). Checked by tests/tests/node_ops.rs.
X=$KATA_RS_PAYLOAD/extra
KRS=$X$1
CRI=$X$2
W=$KATA_RS_WORK
T="timeout -k 10 180"
F=$W/fresh
CFG=/etc/containerd/config.toml
mkdir -p "$F" /etc/containerd

echo "== a node without kata-rs"
# What node-side.sh installed for the other tests goes; the stock containerd config comes.
rm -f /usr/local/bin/containerd-shim-kata-v2 /usr/local/bin/kata-vmm /usr/local/bin/kata-rs \
    /usr/local/libexec/kata-rs/virtiofsd /usr/local/share/kata-rs/vmlinux \
    /usr/local/share/kata-rs/kata-rs-initrd.img /etc/kata-rs/configuration.toml
cat > "$CFG" <<TOML
# A stock containerd 1.6 configuration as a node has it before kata-rs (private paths: this
# is not the harness's containerd).
version = 2
root = "$F/root"
state = "$F/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "$F/containerd.sock"

[ttrpc]
  address = "$F/containerd.sock.ttrpc"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$KATA_RS_PAUSE_IMAGE"
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
TOML
before=$(sha256sum < "$CFG" | cut -d' ' -f1)
"$KRS" check > "$W/check0" 2>&1
echo "check-before-rc=$?"
grep -E 'FAIL' "$W/check0" | head -n 5 | cut -c1-200 | sed 's/^/check-before| /'

echo "== kata-rs install"
# The built artifacts, flat, as a release archive would hold them.
A=$W/artifacts
mkdir -p "$A"
cp "$KATA_RS_PAYLOAD/bin/containerd-shim-kata-v2" "$KATA_RS_PAYLOAD/bin/kata-vmm" \
    "$KATA_RS_PAYLOAD/bin/virtiofsd" "$KATA_RS_PAYLOAD/guest/vmlinux" "$KATA_RS_PAYLOAD/guest/initrd.img" \
    "$KRS" "$A/"
"$KRS" install --from "$A" --containerd-config "$CFG" > "$W/install1" 2>&1
echo "install-rc=$?"
sed 's/^/install| /' "$W/install1" | cut -c1-200
"$KRS" install --from "$A" --containerd-config "$CFG" > "$W/install2" 2>&1
echo "install-again-rc=$?"
echo "install-again-nothing=$(grep -c 'nothing to change' "$W/install2")"
sed 's/^/install-again| /' "$W/install2" | cut -c1-200
echo "merged-handler=$(grep -c 'runtimes.kata\]' "$CFG")"
"$KRS" check > "$W/check1" 2>&1
echo "check-after-rc=$?"
sed 's/^/check-after| /' "$W/check1" | cut -c1-200

echo "== containerd on the merged configuration"
containerd --config "$CFG" > "$W/fresh-containerd.log" 2>&1 &
CPID=$!
dl=$(kata_rs_deadline 60)
until ctr --address "$F/containerd.sock" version > /dev/null 2>&1; do
    kata_rs_before "$dl" && kill -0 $CPID 2> /dev/null || break
    sleep 0.2
done
echo "containerd-up=$(ctr --address "$F/containerd.sock" version > /dev/null 2>&1 && echo yes || echo no)"
tail -n 5 "$W/fresh-containerd.log" | grep -i -E 'error|fatal' | cut -c1-300 | sed 's/^/containerd-log| /'
_kata_rs_pause_oci "$W/pause.tar" || echo "pause-image=failed"
for ns in default k8s.io; do
    for t in "$KATA_RS_PAYLOAD/image/busybox-oci.tar" "$W/pause.tar"; do
        ctr --address "$F/containerd.sock" -n $ns image import "$t" > /dev/null 2>&1 || echo "import-failed| $ns $t"
    done
done
$T ctr --address "$F/containerd.sock" -n default run --rm --runtime io.containerd.kata.v2 \
    "$KATA_RS_IMAGE" fresh1 sh -c 'echo hello-from-a-fresh-node; uname -r' > "$W/run.out" 2>&1 < /dev/null
echo "kata-run-rc=$?"
sed 's/^/kata-run| /' "$W/run.out" | cut -c1-300
mkdir -p "$W/fresh-logs"
timeout -k 10 600 "$CRI" --socket "$F/containerd.sock" --handler kata --image "$KATA_RS_IMAGE" \
    --log-dir "$W/fresh-logs" --timeout 300 --churn 1 > "$W/pod.out" 2>&1
echo "kata-pod-rc=$?"
sed 's/^/kata-pod| /' "$W/pod.out" | cut -c1-300
kill -TERM $CPID; wait $CPID 2> /dev/null
echo "containerd-stopped=yes"

echo "== kata-rs uninstall"
"$KRS" uninstall > "$W/uninstall" 2>&1
echo "uninstall-rc=$?"
sed 's/^/uninstall| /' "$W/uninstall" | cut -c1-200
echo "config-restored=$([ "$(sha256sum < "$CFG" | cut -d' ' -f1)" = "$before" ] && echo yes || echo no)"
left=0
for f in /usr/local/bin/containerd-shim-kata-v2 /usr/local/bin/kata-vmm /usr/local/libexec/kata-rs/virtiofsd \
    /usr/local/share/kata-rs/vmlinux /usr/local/share/kata-rs/kata-rs-initrd.img /etc/kata-rs/configuration.toml; do
    [ -e "$f" ] && { echo "left-after-uninstall| $f"; left=$((left + 1)); }
done
echo "files-left=$left"
# (the harness's own state dir holds the fresh containerd's root; umount its leftovers first)
awk -v d="$F/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do umount "$m" 2> /dev/null; done
kata_rs_leftovers
echo "leftovers-rc=$?"
