# The CRI test: a second containerd with the CRI plugin (kata_rs_start_cri_containerd, runtime
# handlers runc and kata), and one pod per handler driven at the same time by the CRI client
# kata-rs-cri (tests/cri; its host path is $1, copied here by KATA_RS_NODE_EXTRA): host
# network, two containers (httpd server, client), ExecSync, the server on localhost from the
# client, ContainerStats, the CRI log files, StopPodSandbox, RemovePodSandbox. Each client's
# markers are printed in its section (== runc, == kata); tests/tests/cri.rs checks them.
# Mount propagation: each client gets $W/propagation-HANDLER, a shared mount (as a systemd
# host's directories are; the node's root is private), with one directory per CRI mode for
# its `client` container; the client mounts tmpfs under them (tests/cri/src/propagation.rs).
CRI=$KATA_RS_PAYLOAD/extra$1
W=$KATA_RS_WORK
[ -x "$CRI" ] || { echo "no CRI client at $CRI (pass its host path as \$1 and in KATA_RS_NODE_EXTRA)" >&2; exit 1; }
t0=$(kata_rs_uptime)
echo "== cri containerd"
if ! kata_rs_start_cri_containerd; then echo "cri-containerd=failed"; exit 1; fi
echo "cri-containerd=ok"
echo "cri-containerd-seconds=$(awk -v a="$t0" -v b="$(kata_rs_uptime)" 'BEGIN { printf "%.1f", b - a }')"
# The pod's second image, kata-rs.local/second:latest: the test image plus a layer holding
# /etc/kata-rs-image ("second"), built here with sh, tar and sha256sum (no registry) from the
# compact JSON of tests/image/build.sh, and imported like the others.
SECOND_IMAGE=kata-rs.local/second:latest
second_image() {
    _p=$W/second-oci
    rm -rf "$_p"; mkdir -p "$_p/layer/etc" && tar -xf "$KATA_RS_PAYLOAD/image/busybox-oci.tar" -C "$_p" || return 1
    _b=$_p/blobs/sha256
    echo second > "$_p/layer/etc/kata-rs-image"
    (cd "$_p/layer" && tar -cf "$_p/layer.tar" etc) || return 1
    _ld=$(sha256sum < "$_p/layer.tar" | cut -d' ' -f1); _ls=$(wc -c < "$_p/layer.tar" | tr -d ' ')
    mv "$_p/layer.tar" "$_b/$_ld"
    _m=$(sed -n 's/.*"digest":"sha256:\([0-9a-f]\{64\}\)".*/\1/p' "$_p/index.json")
    _c=$(grep -o '"config":{[^}]*}' "$_b/$_m" | sed -n 's/.*sha256:\([0-9a-f]\{64\}\).*/\1/p')
    [ -n "$_m" ] && [ -f "$_b/$_c" ] || { echo "second_image: cannot read the test image's manifest" >&2; return 1; }
    sed "s/\"diff_ids\":\[\([^]]*\)\]/\"diff_ids\":[\1,\"sha256:$_ld\"]/" "$_b/$_c" > "$_p/config"
    _cd=$(sha256sum < "$_p/config" | cut -d' ' -f1); _cs=$(wc -c < "$_p/config" | tr -d ' ')
    sed -e "s/$_c\",\"size\":[0-9]*/$_cd\",\"size\":$_cs/" \
        -e "s/}]}\$/},{\"mediaType\":\"application\/vnd.oci.image.layer.v1.tar\",\"digest\":\"sha256:$_ld\",\"size\":$_ls}]}/" \
        "$_b/$_m" > "$_p/manifest"
    _md=$(sha256sum < "$_p/manifest" | cut -d' ' -f1); _ms=$(wc -c < "$_p/manifest" | tr -d ' ')
    mv "$_p/config" "$_b/$_cd"; mv "$_p/manifest" "$_b/$_md"; rm -f "$_b/$_m" "$_b/$_c"
    sed -e "s/$_m\",\"size\":[0-9]*/$_md\",\"size\":$_ms/" -e "s|$KATA_RS_IMAGE|$SECOND_IMAGE|" \
        "$_p/index.json" > "$_p/index.new" && mv "$_p/index.new" "$_p/index.json"
    (cd "$_p" && tar -cf "$W/second-oci.tar" oci-layout index.json blobs) || return 1
    ctr --address "$KATA_RS_CRI_SOCKET" -n k8s.io image import "$W/second-oci.tar" > /dev/null
}
if second_image; then echo "second-image=ok"; else echo "second-image=failed"; fi
ctr --address "$KATA_RS_CRI_SOCKET" -n k8s.io image ls -q | sed 's/^/images| /'

# Both pods at once; each client prints to its own file.
pids=
for h in runc kata; do
    case $h in runc) port=18080 ;; kata) port=18081 ;; esac
    mkdir -p "$W/cri-logs/$h"
    prop=$W/propagation-$h
    mkdir -p "$prop/private/sub" "$prop/host-to-container/sub" "$prop/bidirectional/sub"
    mount --bind "$prop" "$prop" && mount --make-shared "$prop" || echo "propagation-dir=failed"
    timeout -k 30 900 "$CRI" --socket "$KATA_RS_CRI_SOCKET" --handler "$h" --image "$KATA_RS_IMAGE" --image2 "$SECOND_IMAGE" \
        --log-dir "$W/cri-logs/$h" --port "$port" --cgroup-parent "/kata-rs-test/cri-$h" --timeout 300 \
        --propagation-dir "$prop" \
        > "$W/cri-$h.out" 2>&1 &
    pids="$pids $!"
done
rc=0
for p in $pids; do wait "$p" || rc=1; done
for h in runc kata; do
    echo "== $h"
    cat "$W/cri-$h.out"
done

echo "== after"
# The propagation directories: whatever the clients left mounted there, then the shared binds.
for h in runc kata; do
    for m in $(awk -v d="$W/propagation-$h/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r); do
        echo "propagation-leftover| $h: $m"; umount "$m"
    done
    umount "$W/propagation-$h"
done
# The kata handler reached kata-rs: pod VMs whose agent answered (the shim logs to containerd).
echo "cri-kata-agent-ready=$(grep -c 'msg="agent .* ready (guest kernel' "$KATA_RS_CRI_LOG")"
echo "cri-containers=$(ctr --address "$KATA_RS_CRI_SOCKET" -n k8s.io container ls -q | wc -l)"
echo "cri-tasks=$(ctr --address "$KATA_RS_CRI_SOCKET" -n k8s.io task ls -q | wc -l)"
# Nothing of the pods still mounted (sandbox /dev/shm, rootfs) under the CRI containerd's dirs.
kata_rs_cri_finish $rc "$t0"
exit 0
