# make demo: one container in a kata-rs microVM, next to the same one under runc.
echo "node: $KATA_RS_NODE_KIND ($KATA_RS_NODE_REASON), node kernel $(uname -r)"
CMD='echo "hello from $(hostname)"; echo "kernel: $(uname -r)"; echo "cpus: $(nproc), memory: $(free -m | awk "/Mem:/ {print \$2}") MiB"'
echo
echo "\$ ctr run --rm --runtime io.containerd.kata.v2 $KATA_RS_IMAGE demo sh -c '...'"
t0=$(kata_rs_uptime)
timeout -k 30 600 ctr run --rm --runtime io.containerd.kata.v2 "$KATA_RS_IMAGE" demo sh -c "$CMD"
rc=$?
echo "(exit $rc, $(awk -v a="$t0" -v b="$(kata_rs_uptime)" 'BEGIN { printf "%.1f", b - a }') s)"
echo
echo "\$ ctr run --rm --runtime io.containerd.runc.v2 $KATA_RS_IMAGE demo sh -c '...'"
timeout -k 30 300 ctr run --rm --runtime io.containerd.runc.v2 "$KATA_RS_IMAGE" demo-runc sh -c "$CMD"
echo "(exit $?)"
kata_rs_leftovers > /dev/null || { kata_rs_leftovers; exit 1; }
exit $rc
