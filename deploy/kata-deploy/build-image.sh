#!/usr/bin/env bash
# Builds the kata-rs-deploy container image as an OCI image layout, from the build outputs,
# with no registry and no base image: one layer holding
#   /opt/kata-rs/bin/  kata-rs, kata-vmm, containerd-shim-kata-v2, virtiofsd, vmlinux, initrd.img
#   /entrypoint.sh     deploy/kata-deploy/entrypoint.sh
#   /bin/              the build machine's static busybox and its applet links (the shell)
#   /usr/bin/curl      for labelling the node, with the shared libraries kata-rs and curl
#                      need (from the build machine, found with ldd)
#
# Reproducible: the same inputs give the same bytes, hence the same digest (sorted tar
# entries, owner 0:0, modes normalised, every mtime = SOURCE_DATE_EPOCH (default 0), gzip
# without name or time, JSON written in a fixed order).
#
#   build-image.sh [--release DIR] [--guest DIR] [--out DIR] [--archive FILE] [--name NAME:TAG]
#
#   --release  kata-rs, kata-vmm, containerd-shim-kata-v2, virtiofsd [target/release]
#   --guest    vmlinux, initrd.img [target/guest]
#   --out      the OCI layout directory, replaced [target/kata-rs-deploy]
#   --archive  also a tar of the layout, for `ctr -n k8s.io images import FILE`
#   --name     the image name [kata-rs-deploy:latest]
#
# Prints the manifest digest. Push with e.g. `skopeo copy oci:OUT:TAG docker://REGISTRY/...`.
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
. "$repo/scripts/paths.sh"     # KATA_RS_VMM_IN_TARGET
release=$repo/target/release
guest=$repo/target/guest
out=$repo/target/kata-rs-deploy
archive=
name=kata-rs-deploy:latest
while (($#)); do
    case $1 in
    --release) release=$2; shift 2 ;;
    --guest) guest=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --archive) archive=$2; shift 2 ;;
    --name) name=$2; shift 2 ;;
    *) echo "build-image: unknown argument $1" >&2; exit 2 ;;
    esac
done
epoch=${SOURCE_DATE_EPOCH:-0}
case ${name##*/} in *:*) tag=${name##*:} ;; *) tag=latest; name=$name:latest ;; esac
# The name containerd (and so the kubelet) knows an imported image by: docker.io/library/X
# for a bare X, docker.io/X for a path without a registry host.
case $name in
*/*) first=${name%%/*}
    case $first in *.* | *:* | localhost) full=$name ;; *) full=docker.io/$name ;; esac ;;
*) full=docker.io/library/$name ;;
esac

die() { echo "build-image: $*" >&2; exit 1; }
# kata-vmm: the static build beside DIR (make binaries), else DIR's own.
vmm=$release/../$KATA_RS_VMM_IN_TARGET
[ -f "$vmm" ] || vmm=$release/kata-vmm
for f in "$release"/{kata-rs,containerd-shim-kata-v2,virtiofsd} "$vmm" "$guest"/{vmlinux,initrd.img}; do
    [ -f "$f" ] || die "missing build output $f (make build, or --release/--guest)"
done
busybox=$(command -v busybox) || die "busybox not found (Debian's busybox-static; make deps)"
case $(ldd "$busybox" 2>&1 || true) in *"not a dynamic executable"*) ;; *) die "$busybox is not static" ;; esac
curl=$(command -v curl) || die "curl not found"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage=$work/rootfs
mkdir -p "$stage"/{bin,usr/bin,opt/kata-rs/bin,host,tmp}

for f in kata-rs containerd-shim-kata-v2 virtiofsd; do
    cp -L "$release/$f" "$stage/opt/kata-rs/bin/$f"
done
cp -L "$vmm" "$stage/opt/kata-rs/bin/kata-vmm"
cp -L "$guest/vmlinux" "$guest/initrd.img" "$stage/opt/kata-rs/bin/"
cp "$here/entrypoint.sh" "$stage/entrypoint.sh"
cp "$busybox" "$stage/bin/busybox"
for a in $("$busybox" --list); do
    [ "$a" = busybox ] || [ -e "$stage/bin/$a" ] || ln -s busybox "$stage/bin/$a"
done
cp -L "$curl" "$stage/usr/bin/curl"
# The shared libraries (and the loader) of the programs the container runs.
for exe in "$stage/opt/kata-rs/bin/kata-rs" "$stage/usr/bin/curl"; do
    ldd "$exe" | awk '/=> \// { print $3 } /^\t\// { print $1 }'
done | sort -u | while read -r lib; do
    mkdir -p "$stage$(dirname "$lib")"
    cp -L "$lib" "$stage$lib"
done

# Normalised modes: directories and executables 0755, other files 0644, /tmp 1777.
find "$stage" -type d -exec chmod 0755 {} +
find "$stage" -type f -perm -u+x -exec chmod 0755 {} +
find "$stage" -type f ! -perm -u+x -exec chmod 0644 {} +
chmod 1777 "$stage/tmp"

blobs=$out/blobs/sha256
rm -rf "$out"
mkdir -p "$blobs"
(cd "$stage" && tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner \
    --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -cf "$work/layer.tar" -- *)
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -n <"$work/layer.tar" >"$work/layer.tar.gz"

# blob FILE: stores FILE under its digest; prints "DIGEST SIZE".
blob() {
    local d s
    d=$(sha256sum "$1" | cut -d' ' -f1)
    s=$(stat -c %s "$1")
    cp "$1" "$blobs/$d"
    echo "$d $s"
}
read -r layer_digest layer_size < <(blob "$work/layer.tar.gz")
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
printf '{"architecture":"amd64","os":"linux","created":"%s","config":{"Env":["PATH=/bin:/usr/bin:/opt/kata-rs/bin"],"Entrypoint":["/entrypoint.sh"],"Cmd":["run"],"Labels":{"org.opencontainers.image.title":"kata-rs-deploy"}},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"%s","created_by":"deploy/kata-deploy/build-image.sh"}]}' \
    "$created" "$diff_id" "$created" >"$work/config.json"
read -r config_digest config_size < <(blob "$work/config.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
    "$config_digest" "$config_size" "$layer_digest" "$layer_size" >"$work/manifest.json"
read -r manifest_digest manifest_size < <(blob "$work/manifest.json")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
    "$manifest_digest" "$manifest_size" "$full" "$tag" >"$out/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$out/oci-layout"
find "$out" -type d -exec chmod 0755 {} +
find "$out" -type f -exec chmod 0644 {} +

if [ -n "$archive" ]; then
    (cd "$out" && tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner \
        --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
        -cf "$work/image.tar" -- blobs index.json oci-layout)
    mv "$work/image.tar" "$archive"
fi
echo "build-image: $out ($full) manifest sha256:$manifest_digest, layer $((layer_size / 1024 / 1024)) MiB" >&2
echo "sha256:$manifest_digest"
