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

echo "== bad-config"
{ kata_rs_config; printf 'vcpu = 2\n'; } > /etc/kata-rs/bad.toml     # a misspelt key
timeout -k 30 300 ctr run --rm --runtime io.containerd.katabad.v2 "$IMG" b4 true > out 2>&1
echo "bad-config-rc=$?"
sed 's/^/bad-config| /' out
case_end bad-config

# Malformed OCI specs (ctr run --config): an unknown namespace type, a mount of a file system
# that does not exist, a uid that cannot be a user (2^32-1 is "no change" to setresuid).
# `ctr oci spec` has no env: the base spec sets PATH, as a runnable spec must (no default).
mkdir -p img rootfs
ctr images mount "$IMG" img > /dev/null && cp -a img/. rootfs/ && ctr images unmount img > /dev/null
ctr oci spec | sed -e "s|\"path\": \"rootfs\"|\"path\": \"$PWD/rootfs\"|" \
    -e 's|"cwd": "/",|"cwd": "/", "args": ["sh", "-c", "echo ran-as-$(id -u)"], "env": ["PATH=/bin:/usr/bin"],|' > base.json
spec_case() {   # NAME ID SED-EXPRESSION
    echo "== $1"
    sed -e "$3" base.json > "$1.json"
    cmp -s base.json "$1.json" && echo "$1: the spec edit did not apply"
    timeout -k 30 600 ctr run --rm --runtime io.containerd.kata.v2 --config "$1.json" "$2" > out 2>&1
    echo "$1-rc=$?"
    sed "s/^/$1| /" out
    case_end "$1"
}
spec_case bad-namespace b5 's|"type": "network"|"type": "network"}, {"type": "nosuchns"|'
spec_case bad-mount b6 's|"mounts": \[|"mounts": [{"destination": "/mnt/x", "type": "nosuchfs", "source": "none"},|'
spec_case bad-uid b7 's|"uid": 0,|"uid": 4294967295,|'

echo "== missing-config-path"
# Runtime option ConfigPath (what CRI sends for a handler with options) naming no file.
timeout -k 30 300 ctr run --rm --runtime io.containerd.kata.v2 \
    --runtime-config-path /nonexistent/kata-rs/configuration.toml "$IMG" b8 true > out 2>&1
echo "missing-config-path-rc=$?"
sed 's/^/missing-config-path| /' out
case_end missing-config-path
