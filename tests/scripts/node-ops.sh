# Node operations (issue 12) on a real sandbox: `kata-rs metrics` (host and guest figures of a
# running kata container; `promtool check metrics` on them), `kata-rs overhead` on it, and the
# installer image (deploy/kata-deploy/build-image.sh): imported by `ctr`, its entry point run
# in a runc container against a scratch root with containerd's config (install, then
# uninstall: the root as before).
# Args: KATA_RS PROMTOOL IMAGE_TAR (host paths, in the payload's extra/). Checked by
# tests/tests/node_ops.rs.
R=io.containerd.kata.v2
W=$KATA_RS_WORK
X=$KATA_RS_PAYLOAD/extra
KRS=$X$1
PROMTOOL=$X$2
IMAGE_TAR=$X$3
T="timeout -k 10 120"
# metric NAME{LABELS}: its value in $W/m.txt.
metric() { awk -v k="$1" '$1 == k { print $2 }' "$W/m.txt"; }

echo "== metrics"
$T ctr run -d --runtime $R "$KATA_RS_IMAGE" n1 sh -c 'while true; do sleep 1; done' < /dev/null 2>&1
kata_rs_wait_status n1 RUNNING 180
echo "status=$(kata_rs_task_status n1)"
$T "$KRS" metrics --once --containerd-tasks "$W/state/io.containerd.runtime.v2.task" > "$W/m.txt" 2> "$W/m.err"
echo "metrics-rc=$?"
grep -v '^#' "$W/m.txt"
sed 's/^/metrics-stderr| /' "$W/m.err"
echo "sandboxes=$(metric kata_rs_sandboxes)"
for p in vmm virtiofsd shim; do
    echo "pss-$p=$(metric "kata_rs_process_proportional_memory_bytes{sandbox_id=\"n1\",process=\"$p\"}")"
done
echo "cgroup-memory=$(metric 'kata_rs_sandbox_cgroup_memory_bytes{sandbox_id="n1"}')"
echo "guest-pids=$(metric 'kata_rs_guest_pids{sandbox_id="n1",container_id="n1"}')"
echo "guest-cpu=$(metric 'kata_rs_guest_cpu_seconds_total{sandbox_id="n1",container_id="n1"}')"
echo "scrape-errors=$(metric kata_rs_metrics_scrape_errors)"
"$PROMTOOL" check metrics < "$W/m.txt" > "$W/p.out" 2>&1
echo "promtool-rc=$?"
echo "promtool-lines=$(wc -l < "$W/p.out")"
sed 's/^/promtool| /' "$W/p.out"

echo "== overhead"
$T "$KRS" overhead --secs 5 > "$W/rc.yaml" 2>&1
echo "overhead-rc=$?"
cat "$W/rc.yaml"
echo "overhead-memory=$(awk '$1 == "memory:" { gsub(/"/, "", $2); print $2 }' "$W/rc.yaml")"
echo "overhead-cpu=$(awk '$1 == "cpu:" { gsub(/"/, "", $2); print $2 }' "$W/rc.yaml")"
kata_rs_stop_task n1 > /dev/null
ctr container rm n1

echo "== image"
$T ctr images import "$IMAGE_TAR" 2>&1
echo "import-rc=$?"
IMG=$(ctr images ls -q | grep kata-rs-deploy | head -n 1)
echo "image=$IMG"
S=$W/scratch
mkdir -p "$S/etc/containerd"
printf '# the operator'"'"'s\nversion = 2\n' > "$S/etc/containerd/config.toml"
cp "$S/etc/containerd/config.toml" "$W/config.before"
for step in install uninstall; do
    $T ctr run --rm --mount "type=bind,src=$S,dst=/host,options=rbind:rw" \
        --env KATA_RS_NODE_LABEL= --env KATA_RS_RESTART=false \
        "$IMG" "deploy-$step" /entrypoint.sh "$step" < /dev/null > "$W/$step.out" 2>&1
    echo "$step-rc=$?"
    sed "s/^/$step| /" "$W/$step.out" | head -n 12
    if [ "$step" = install ]; then
        echo "installed=$(ls "$S/usr/local/bin" 2>/dev/null | tr '\n' ',')"
        echo "handler=$(grep -c 'runtimes.kata]' "$S/etc/containerd/config.toml")"
    fi
done
cmp -s "$W/config.before" "$S/etc/containerd/config.toml" && echo "config-restored=yes" || echo "config-restored=no"
# Everything but the operator's config (and its directories) is gone again.
echo "left=$(find "$S" -mindepth 1 | sed "s|^$S||" | grep -vx -e /etc -e /etc/containerd -e /etc/containerd/config.toml | wc -l)"
