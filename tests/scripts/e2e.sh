# End to end: the same container through io.containerd.kata.v2 (a microVM, guest kernel
# *-kata-rs) and io.containerd.runc.v2 (the node's kernel); exit codes come through; nothing
# is left behind. The Rust test (tests/tests/e2e.rs) checks the markers.
CMD='echo hello; uname -r; exit 3'
echo "node-kernel=$(uname -r)"
echo "== kata"
t0=$(kata_rs_uptime)
timeout -k 30 600 ctr run --rm --runtime io.containerd.kata.v2 "$KATA_RS_IMAGE" t1 sh -c "$CMD"
echo "kata-rc=$?"
echo "kata-seconds=$(awk -v a="$t0" -v b="$(kata_rs_uptime)" 'BEGIN { printf "%.1f", b - a }')"
echo "== kata leftovers"
kata_rs_leftovers
echo "kata-leftovers-rc=$?"
echo "== runc"
timeout -k 30 300 ctr run --rm --runtime io.containerd.runc.v2 "$KATA_RS_IMAGE" t2 sh -c "$CMD"
echo "runc-rc=$?"
echo "== after"
echo "containers=$(ctr container ls -q | wc -l)"; echo "tasks=$(ctr task ls -q | wc -l)"
kata_rs_leftovers
echo "leftovers-rc=$?"
