# Harness smoke test: the runc path works on the node (no kata-rs parts needed).
echo "kind=$KATA_RS_NODE_KIND"
echo "image=$(ctr image ls -q | tr "\n" " ")"
ctr run --rm --runtime io.containerd.runc.v2 "$KATA_RS_IMAGE" r1 sh -c 'echo hello; uname -r; id -un; exit 3'
echo "runc-rc=$?"
kata_rs_leftovers
echo "leftovers-rc=$?"
