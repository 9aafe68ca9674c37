#!/usr/bin/env bash
# Makes the image geolb runs on where no registry is reachable (no debian:bookworm-slim to pull):
# a minimal root filesystem holding what the geolb binary links (ldd), an unprivileged user
# `geolb` (uid/gid 10001), the CA bundle (for https:// nodes), nsswitch.conf and /tmp, imported
# with `docker import`. No shell, no package manager: nothing runs in it but geolb.
#
#   bash deploy/docker/base.sh [BINARY] [TAG]     # defaults: target/release/geolb, geolb-base
#   docker build --target prebuilt --build-arg BASE=geolb-base -t geolb .
#
# The libraries are the build host's, so build the binary on the same Debian release (bookworm).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-target/release/geolb}
tag=${2:-geolb-base}
[[ -x $bin ]] || { echo "base: no binary at $bin (cargo build --release first)" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{etc/ssl/certs,tmp,usr/local/bin}
chmod 1777 "$root/tmp"

# The dynamic loader and every library, at the paths the binary asks for (symlinks resolved).
libs=$(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
[[ -n $libs ]] || { echo "base: ldd found no libraries in $bin" >&2; exit 1; }
for lib in $libs; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
# Debian's /lib* are symlinks into /usr: the loader's path must resolve in the image too.
for d in lib lib64; do
    if [[ -L /$d && -d $root/$d ]]; then
        mkdir -p "$root/usr/$d"
        cp -a "$root/$d/." "$root/usr/$d/"
        rm -rf "${root:?}/$d"
        ln -s "usr/$d" "$root/$d"
    fi
done

cat > "$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
geolb:x:10001:10001:geolb:/nonexistent:/sbin/nologin
PASSWD
cat > "$root/etc/group" <<'GROUP'
root:x:0:
geolb:x:10001:
GROUP
echo 'hosts: files dns' > "$root/etc/nsswitch.conf"
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
fi

tar -C "$root" --numeric-owner --owner=0 --group=0 -c . | docker import \
    --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' - "$tag" >/dev/null
echo "base: $tag, $(du -sk "$root" | cut -f1) KiB: $(echo "$libs" | wc -w) libraries from $(ldd --version | head -1)"
