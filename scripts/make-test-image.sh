#!/usr/bin/env bash
# Build a tiny, deterministic OCI image from the static busybox binary.
#
#   scripts/make-test-image.sh OUT NAME
#
#   OUT   ends in ".tar" -> an OCI archive (tar of an OCI image layout), accepted by
#                           `ctr images import` and `skopeo ... oci-archive:OUT`;
#         otherwise      -> an OCI image layout directory (`skopeo ... oci:OUT`).
#   NAME  full image reference, e.g. localhost/dcs-test/busybox:1
#
# The index.json entry carries two annotations:
#   io.containerd.image.name          = NAME  (ctr/containerd use it verbatim as the image name)
#   org.opencontainers.image.ref.name = tag   (OCI layout convention; skopeo's oci:OUT:tag)
#
# Only coreutils, GNU tar and gzip are needed (no python, no jq), so it runs on a fresh
# Debian machine with busybox-static installed. All mtimes are SOURCE_DATE_EPOCH
# (default 2000-01-01), so the same busybox binary always gives the same digests.
set -euo pipefail

usage() {
    echo "usage: $0 OUT_DIR_OR_TAR NAME   (e.g. $0 /tmp/busybox.tar localhost/dcs-test/busybox:1)" >&2
    exit 2
}

[[ $# -eq 2 ]] || usage
OUT=$1
NAME=$2
BUSYBOX=${BUSYBOX:-/bin/busybox}
EPOCH=${SOURCE_DATE_EPOCH:-946684800}
CREATED=$(date -u -d "@$EPOCH" +%Y-%m-%dT%H:%M:%SZ)

die() { echo "make-test-image: $*" >&2; exit 1; }

# The tag is what follows the last ':' after the last '/' (a registry port is not a tag).
image_tag() {
    local last=${1##*/}
    if [[ $last == *:* ]]; then echo "${last##*:}"; else echo latest; fi
}

[[ $NAME =~ ^[a-z0-9]([a-z0-9._:/-]*[a-zA-Z0-9_.-])?$ && $NAME != *@* ]] \
    || die "NAME must be a plain reference like host/repo:tag (got '$NAME')"
[[ -x $BUSYBOX ]] || die "$BUSYBOX not found: apt-get install busybox-static"
# A dynamically linked busybox would not run in an image without libc.
if command -v file >/dev/null && ! file -L "$BUSYBOX" | grep -q 'statically linked'; then
    die "$BUSYBOX is not statically linked (install busybox-static)"
fi
TAG=$(image_tag "$NAME")

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# ---------------------------------------------------------------------------------------
# Root filesystem
# ---------------------------------------------------------------------------------------
ROOTFS=$WORK/rootfs

# Applets we link. Anything this busybox lacks is skipped (e.g. setfattr/getfattr are not
# in Debian's busybox-static 1.35).
APPLETS=(
    sh ash ls cat echo sleep mkdir rmdir rm touch ln chmod chown chgrp mknod mkfifo stat
    find sha256sum sha1sum sha512sum md5sum dd head tail tr seq setfattr getfattr true false
    wc sort uniq readlink realpath xargs env id test '[' '[[' printf cp mv grep egrep sed awk
    cut basename dirname date du df ps kill pwd hostname uname whoami tee tar gzip gunzip
    zcat diff cmp truncate sync mount umount ln which yes od hexdump xxd vi less more
    expr mktemp nproc timeout usleep watch wget nc cpio base64 unlink link
)

build_rootfs() {
    local d a have
    for d in bin etc root home/speaker tmp var/tmp run dev proc sys usr/bin usr/sbin sbin; do
        mkdir -p "$ROOTFS/$d"
    done
    chmod 0755 "$ROOTFS"/{bin,etc,home,home/speaker,run,dev,proc,sys,usr,usr/bin,usr/sbin,sbin,var}
    chmod 0700 "$ROOTFS/root"
    chmod 1777 "$ROOTFS/tmp" "$ROOTFS/var/tmp"

    install -m 0755 "$BUSYBOX" "$ROOTFS/bin/busybox"
    have=" $("$BUSYBOX" --list | tr '\n' ' ') "
    for a in "${APPLETS[@]}"; do
        [[ $have == *" $a "* && ! -e $ROOTFS/bin/$a ]] || continue
        ln -s busybox "$ROOTFS/bin/$a"
    done

    cat >"$ROOTFS/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
speaker:x:1000:1000:speaker:/home/speaker:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
    cat >"$ROOTFS/etc/group" <<'EOF'
root:x:0:
speaker:x:1000:
nogroup:x:65534:
EOF
    printf 'dcs-test\n' >"$ROOTFS/etc/hostname"
    chmod 0644 "$ROOTFS"/etc/{passwd,group,hostname}
}

# Layer tar: everything owned by root except /home/speaker (1000:1000). Written in two
# passes (root-owned entries, then the speaker entries appended) so no chown is needed
# and the script works without root. Sorted names and fixed mtimes keep it reproducible.
build_layer() {
    local tar_opts=(--format=gnu --sort=name --mtime="@$EPOCH" --numeric-owner)
    local top
    # Entry names like "bin/sh" (no "./" prefix), as docker/buildkit layers have them.
    mapfile -t top < <(cd "$ROOTFS" && shopt -s dotglob && printf '%s\n' * | LC_ALL=C sort)
    ( cd "$ROOTFS" &&
      tar -cf "$WORK/layer.tar" "${tar_opts[@]}" --owner=0 --group=0 \
          --exclude=home/speaker -- "${top[@]}" &&
      tar -rf "$WORK/layer.tar" "${tar_opts[@]}" --owner=1000 --group=1000 home/speaker )
    gzip -9 -n -c "$WORK/layer.tar" >"$WORK/layer.tar.gz"
}

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

# Store a file as a blob; prints its digest.
put_blob() {
    local digest
    digest=$(sha "$1")
    cp "$1" "$LAYOUT/blobs/sha256/$digest"
    echo "$digest"
}

json_escape() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    printf '%s' "$s"
}

build_layout() {
    local diff_id layer_digest layer_size config_digest config_size manifest_digest manifest_size
    LAYOUT=$WORK/layout
    mkdir -p "$LAYOUT/blobs/sha256"

    diff_id=$(sha "$WORK/layer.tar")
    layer_digest=$(put_blob "$WORK/layer.tar.gz")
    layer_size=$(size "$WORK/layer.tar.gz")

    printf '%s' '{"architecture":"amd64","os":"linux","created":"'"$CREATED"'",'\
'"config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],'\
'"Cmd":["sh"],"WorkingDir":"/"},'\
'"rootfs":{"type":"layers","diff_ids":["sha256:'"$diff_id"'"]},'\
'"history":[{"created":"'"$CREATED"'","created_by":"scripts/make-test-image.sh: busybox-static rootfs"}]}' \
        >"$WORK/config.json"
    config_digest=$(put_blob "$WORK/config.json")
    config_size=$(size "$WORK/config.json")

    printf '%s' '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'\
'"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:'"$config_digest"'","size":'"$config_size"'},'\
'"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:'"$layer_digest"'","size":'"$layer_size"'}]}' \
        >"$WORK/manifest.json"
    manifest_digest=$(put_blob "$WORK/manifest.json")
    manifest_size=$(size "$WORK/manifest.json")

    printf '%s' '{"imageLayoutVersion":"1.0.0"}' >"$LAYOUT/oci-layout"
    printf '%s' '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",'\
'"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:'"$manifest_digest"'","size":'"$manifest_size"','\
'"platform":{"architecture":"amd64","os":"linux"},'\
'"annotations":{"io.containerd.image.name":"'"$(json_escape "$NAME")"'","org.opencontainers.image.ref.name":"'"$(json_escape "$TAG")"'"}}]}' \
        >"$LAYOUT/index.json"
    MANIFEST_DIGEST=sha256:$manifest_digest
}

write_output() {
    if [[ $OUT == *.tar ]]; then
        mkdir -p "$(dirname "$OUT")"
        ( cd "$LAYOUT" &&
          tar -cf "$WORK/out.tar" --format=gnu --sort=name --mtime="@$EPOCH" \
              --owner=0 --group=0 --numeric-owner oci-layout index.json blobs )
        mv -f "$WORK/out.tar" "$OUT"
    else
        # Only ever replace an earlier OCI layout or an empty directory.
        if [[ -e $OUT ]]; then
            [[ -d $OUT && ( -f $OUT/oci-layout || -z $(ls -A "$OUT") ) ]] \
                || die "$OUT exists and is not an OCI layout directory"
            rm -rf "$OUT"
        fi
        mkdir -p "$(dirname "$OUT")"
        cp -r "$LAYOUT" "$OUT"
    fi
}

build_rootfs
build_layer
build_layout
write_output
echo "$OUT: $NAME $MANIFEST_DIGEST"
