# Bad input: each case must fail with a clear error and leave nothing behind.
# Broken configurations go through io.containerd.katabad.v2 (the same shim with
# KATA_RS_CONFIG=/etc/kata-rs/bad.toml). Markers are checked by tests/tests/bad_input.rs.
IMG=$KATA_RS_IMAGE
secs() { awk -v a="$1" -v b="$(kata_rs_uptime)" 'BEGIN { printf "%.1f", b - a }'; }
case_end() {   # NAME
    echo "$1-containers=$(ctr container ls -q | wc -l)"; echo "$1-tasks=$(ctr task ls -q | wc -l)"
    kata_rs_leftovers > leftovers; r=$?
    sed "s/^/$1| /" leftovers
    echo "$1-leftovers-rc=$r"
}

echo "== missing-kernel"
# (initrd: one that exists, so that only the kernel is wrong)
kata_rs_config kernel=/nonexistent/kata-rs/vmlinux-missing initrd="$KATA_RS_HANG_INITRD" > /etc/kata-rs/bad.toml
timeout -k 30 300 ctr run --rm --runtime io.containerd.katabad.v2 "$IMG" b1 true > out 2>&1
echo "missing-kernel-rc=$?"
sed 's/^/missing-kernel| /' out
case_end missing-kernel

echo "== hang"
kata_rs_config initrd="$KATA_RS_HANG_INITRD" dial_timeout=15 > /etc/kata-rs/bad.toml
t0=$(kata_rs_uptime)
timeout -k 30 300 ctr run --rm --runtime io.containerd.katabad.v2 "$IMG" b2 true > out 2>&1
echo "hang-rc=$?"
echo "hang-seconds=$(secs "$t0")"
sed 's/^/hang| /' out
case_end hang

echo "== no-command"
timeout -k 30 600 ctr run --rm --runtime io.containerd.kata.v2 "$IMG" b3 /no-such-command-xyz > out 2>&1
echo "no-command-rc=$?"
sed 's/^/no-command| /' out
case_end no-command
