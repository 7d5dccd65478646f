#!/usr/bin/env bash
# Build (once) the node tier's container images as docker-archive tars (issue 14). Nothing can be
# pulled from a registry here, so every image is made locally:
#
#   $KVINJECT_CACHE (default ~/.cache/kvinject)/images/
#     pause-<key>.tar                   kvinject.local/pause:<key>     the static pause (tests/node/pause)
#     busybox-<key>.tar                 kvinject.local/busybox:<key>   Debian's busybox-static + applet links
#     kvinject-base-bookworm-<key>.tar  kvinject.local/kvinject-base:bookworm-<key>
#                                       debootstrap --variant=minbase bookworm + python3 (3.11), python3-venv
#     kvinject-<key>.tar                kvinject.local/kvinject:<key>  OUR Dockerfile's serve target and
#     kvinject-fetch-<key>.tar          kvinject.local/kvinject-fetch:<key>  its fetch target (the init
#                                       container), built by buildah with --build-arg BASE_IMAGE=<the base above>
#
# <key> is the first 12 hex digits of a sha256 over everything the image is made from (binaries,
# tests/node/oci.py, the recipe; for kvinject and kvinject-fetch: Dockerfile, .dockerignore, pyproject.toml,
# README.md, requirements/, webhook/ and the base's key), so a code change builds new tars and a warm run
# only checks that the tars exist (about a second). Old tars are left in place (never deleted here).
#
# pause, busybox and the base are written by tests/node/oci.py (no daemon). debootstrap and buildah
# run as root inside a private mount namespace (`unshare --mount`), so nothing they mount outlives
# them; buildah uses a throwaway storage under $KVINJECT_CACHE/tmp, removed on exit. Network: only
# Debian's mirror (debootstrap) and PyPI (pip inside the build, with --network host, the host's
# CA bundle and pip settings bind-mounted).
#
# Prints KEY=value lines on stdout (logs go to stderr):
#   PAUSE_IMAGE= PAUSE_IMAGE_TAR= BUSYBOX_IMAGE= BUSYBOX_IMAGE_TAR= KVINJECT_IMAGE= KVINJECT_IMAGE_TAR=
#   FETCH_IMAGE= FETCH_IMAGE_TAR= (and the base's)
#
# Usage: tests/node/images.sh                # or: make node-images (after make node-binaries)
#        KVINJECT_CACHE=/some/dir tests/node/images.sh
set -euo pipefail

NODE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$NODE_DIR/../.." && pwd)
# shellcheck source=versions.env
source "$NODE_DIR/versions.env"
: "${BASE_SUITE:?}" "${BASE_MIRROR:?}" "${BASE_PACKAGES:?}"

CACHE=${KVINJECT_CACHE:-$HOME/.cache/kvinject}
mkdir -p "$CACHE/images" "$CACHE/tmp"
CACHE=$(cd "$CACHE" && pwd)
IMAGES=$CACHE/images
PYTHON=${PYTHON:-python3}
OCI=$NODE_DIR/oci.py

# One clock for this run and its re-executions inside the mount namespace.
export KVINJECT_IMAGES_T0=${KVINJECT_IMAGES_T0:-$EPOCHSECONDS}
log() { printf '[node-images +%4ds] %s\n' "$((EPOCHSECONDS - KVINJECT_IMAGES_T0))" "$*" >&2; }
die() { printf '[node-images] ERROR: %s\n' "$*" >&2; exit 1; }

sha12() { sha256sum | cut -c1-12; }

# archive_ok TAR REF -> true when TAR is a docker-archive of REF
archive_ok() {
    [[ -s "$1" ]] || return 1
    [[ "$("$PYTHON" "$OCI" inspect "$1" 2>/dev/null | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["ref"])' 2>/dev/null)" == "$2" ]]
}

size_of() { du -h --apparent-size "$1" | cut -f1; }

# =====================================================================================
# Inside the private mount namespace (re-executed by `unshare`): debootstrap and buildah.
# =====================================================================================

# ns_private_run: a tmpfs over /run inside the namespace (`mount -n`: libmount would otherwise
# create /run/mount on the host before the tmpfs is there) takes what debootstrap, libmount, buildah
# and runc write there (/run/mount, /run/runc, /run/containers), so none of it reaches the host.
ns_private_run() {
    mount -n -t tmpfs -o mode=0755,size=64m kvinject-images-run /run || die "cannot mount a private /run"
}

# ns_base ROOTFS_PARENT TAR REF: debootstrap a minimal Debian, trim it, pack it with oci.py.
ns_base() {
    local parent=$1 tar=$2 ref=$3 rootfs="$1/rootfs"
    ns_private_run
    log "debootstrap --variant=minbase --include=$BASE_PACKAGES $BASE_SUITE ($BASE_MIRROR) ..."
    local t0=$SECONDS
    if ! debootstrap --variant=minbase --include="$BASE_PACKAGES" --components=main \
        "$BASE_SUITE" "$rootfs" "$BASE_MIRROR" >"$parent/debootstrap.out" 2>&1; then
        tail -n 30 "$parent/debootstrap.out" >&2
        [[ -f "$rootfs/debootstrap/debootstrap.log" ]] && tail -n 30 "$rootfs/debootstrap/debootstrap.log" >&2
        die "debootstrap failed (log above)"
    fi
    log "debootstrap done in $((SECONDS - t0))s ($(du -sh "$rootfs" | cut -f1))"
    # Whatever debootstrap left mounted (proc, sys) goes before packing.
    local m
    for m in $(findmnt -rn -o TARGET | grep -F "$rootfs" | sort -r); do umount -l "$m"; done
    [[ -x "$rootfs/usr/bin/python3" ]] || die "no /usr/bin/python3 in the debootstrapped base"
    chroot "$rootfs" /usr/bin/python3 -c 'import sys, venv, ensurepip; assert sys.version_info[:2] == (3, 11), sys.version' \
        || die "the base's python3 is not 3.11 with venv and ensurepip"
    # Trim what no container needs: package caches and lists, docs, manuals, locales, logs,
    # device nodes (the runtime provides /dev), the host's resolver and name.
    local r=${rootfs:?}
    rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/cache/apt/*.bin "$r"/var/lib/apt/lists/* \
        "$r"/usr/share/doc/* "$r"/usr/share/man/* "$r"/usr/share/info/* \
        "$r"/usr/share/locale/* "$r"/var/log/* "$r"/debootstrap "${r:?}"/dev/* \
        "$r"/run/* "$r"/tmp/* "$r"/var/tmp/*
    : >"$rootfs/etc/resolv.conf"
    echo localhost >"$rootfs/etc/hostname"
    : >"$rootfs/etc/machine-id"
    chmod 1777 "$rootfs/tmp"
    log "packing the base ($(du -sh "$rootfs" | cut -f1) trimmed) as $ref"
    "$PYTHON" "$OCI" write --rootfs "$rootfs" --out "$tar" --ref "$ref" \
        --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env LANG=C.UTF-8 \
        --label org.opencontainers.image.description="debootstrap $BASE_SUITE minbase + $BASE_PACKAGES (kvinject tests/node)" \
        --cmd '["python3"]' >&2
}

# ns_kvinject STORAGE BASE_TAR BASE_REF [TARGET TAR REF]...: build each target of the Dockerfile with
# buildah (one storage, --layers: the targets share the wheel stage), push each to its tar.
ns_kvinject() {
    local storage=$1 base_tar=$2 base_ref=$3
    shift 3
    ns_private_run
    # buildah keeps a blob-info cache in /var/lib/containers/cache whatever --root says: give it
    # our scratch (the host's, if any, stays untouched); big temporary files go there too.
    mkdir -p "$storage/varlib" "$storage/tmp"
    mount -n --bind "$storage/varlib" /var/lib/containers || die "cannot bind $storage/varlib on /var/lib/containers"
    export TMPDIR=$storage/tmp
    local b=(buildah --root "$storage/root" --runroot "$storage/run" --storage-driver overlay)

    log "buildah: loading the base $base_ref"
    local id
    id=$("${b[@]}" pull --quiet "docker-archive:$base_tar") || die "buildah pull docker-archive:$base_tar failed"
    "${b[@]}" tag "$id" "$base_ref" || die "buildah tag $base_ref failed"

    # pip inside the build reaches PyPI through the host's network, CA bundle and pip settings.
    local ca=${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
    [[ -s "$ca" ]] || die "no CA bundle at $ca for pip inside the build"
    local pipconf="$storage/pip.conf" index
    {
        echo "[global]"
        echo "cert = /etc/ssl/certs/ca-certificates.crt"
        echo "timeout = ${PIP_DEFAULT_TIMEOUT:-60}"
        echo "disable-pip-version-check = true"
        index=${PIP_INDEX_URL:-$(pip3 config get global.index-url 2>/dev/null || true)}
        [[ -z "$index" ]] || echo "index-url = $index"
        [[ -z "${PIP_EXTRA_INDEX_URL:-}" ]] || echo "extra-index-url = $PIP_EXTRA_INDEX_URL"
    } >"$pipconf"

    local target tar ref t0
    while (($# >= 3)); do
        target=$1 tar=$2 ref=$3
        shift 3
        log "buildah bud $REPO_DIR/Dockerfile --target $target --build-arg BASE_IMAGE=$base_ref -t $ref ..."
        t0=$SECONDS
        "${b[@]}" bud --pull=never --network host --layers --format docker \
            --runtime-flag "root=$storage/runc" \
            --build-arg "BASE_IMAGE=$base_ref" --target "$target" \
            -v "$ca:/etc/ssl/certs/ca-certificates.crt:ro" -v "$pipconf:/etc/pip.conf:ro" \
            -f "$REPO_DIR/Dockerfile" -t "$ref" "$REPO_DIR" >&2 \
            || die "buildah bud --target $target of $REPO_DIR/Dockerfile failed (output above)"
        log "built $ref in $((SECONDS - t0))s"
        "${b[@]}" push --quiet "$ref" "docker-archive:$tar:$ref" >&2 || die "buildah push $ref to $tar failed"
    done
    "${b[@]}" rmi --all --force >/dev/null 2>&1 || true
}

case "${1:-}" in
    __ns_base) shift; ns_base "$@"; exit 0 ;;
    __ns_kvinject) shift; ns_kvinject "$@"; exit 0 ;;
    "") ;;
    *) die "usage: $0 (no arguments)" ;;
esac

# =====================================================================================
# Main
# =====================================================================================
command -v "$PYTHON" >/dev/null || die "no $PYTHON (set PYTHON=...)"

# Serialise concurrent runs sharing one cache.
exec 8>"$CACHE/.images.lock"
command -v flock >/dev/null 2>&1 && flock 8

# One scratch directory per run (created here: new_scratch runs in command substitutions).
SCRATCH=$(mktemp -d "$CACHE/tmp/images.XXXXXX")
cleanup_scratch() {
    [[ -n "$SCRATCH" && -d "$SCRATCH" ]] || return 0
    # Everything was mounted in a namespace that is gone; refuse to delete through a live mount.
    if findmnt -rn -o TARGET | grep -qF "$SCRATCH"; then
        printf '[node-images] WARNING: mounts left under %s; not removing it\n' "$SCRATCH" >&2
        return 0
    fi
    rm -rf "$SCRATCH"
}
MADE_VARLIB_CONTAINERS=0
cleanup() {
    cleanup_scratch
    if ((MADE_VARLIB_CONTAINERS)); then rmdir /var/lib/containers 2>/dev/null || true; fi
}
trap cleanup EXIT
new_scratch() {
    mkdir -p "$SCRATCH/$1"
    printf '%s\n' "$SCRATCH/$1"
}

# The pause binary (and the Debian packages) from build.sh: a warm call takes a second.
BUILD_OUT=$("$NODE_DIR/build.sh") || die "tests/node/build.sh failed"
PAUSE_BIN=$(sed -n 's/^PAUSE=//p' <<<"$BUILD_OUT")
[[ -x "$PAUSE_BIN" ]] || die "build.sh reported no pause binary"
OCI_SHA=$(sha256sum "$OCI" | cut -d' ' -f1)

# ---------------------------------------------------------------------------- pause
PAUSE_SPEC='--entrypoint ["/pause"] --user 65535:65535'
PAUSE_KEY=$({ echo "pause v1 $PAUSE_SPEC $OCI_SHA"; cat "$PAUSE_BIN"; } | sha12)
PAUSE_REF=kvinject.local/pause:$PAUSE_KEY
PAUSE_TAR=$IMAGES/pause-$PAUSE_KEY.tar
if archive_ok "$PAUSE_TAR" "$PAUSE_REF"; then
    log "pause: cached ($PAUSE_TAR)"
else
    "$PYTHON" "$OCI" write --out "$PAUSE_TAR" --ref "$PAUSE_REF" --file "$PAUSE_BIN=/pause:0755" \
        --entrypoint '["/pause"]' --user 65535:65535 >&2
    log "pause: wrote $PAUSE_TAR ($(size_of "$PAUSE_TAR"))"
fi

# ---------------------------------------------------------------------------- busybox
BUSYBOX=/bin/busybox
if ! [[ -x $BUSYBOX ]] || ! "$BUSYBOX" --list-full >/dev/null 2>&1; then
    die "no $BUSYBOX (Debian package busybox-static)"
fi
BB_PASSWD='root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
nonroot:x:65532:65532:nonroot:/home/nonroot:/bin/sh'
BB_GROUP='root:x:0:
nobody:x:65534:
nonroot:x:65532:'
BB_SPEC="busybox v1 PATH=/usr/sbin:/usr/bin:/sbin:/bin cmd=sh dirs=tmp:1777,root:0700,home/nonroot,etc,proc,sys,dev,var $BB_PASSWD $BB_GROUP"
BUSYBOX_KEY=$({ echo "$BB_SPEC $OCI_SHA"; "$BUSYBOX" --list-full | LC_ALL=C sort; cat "$BUSYBOX"; } | sha12)
BUSYBOX_REF=kvinject.local/busybox:$BUSYBOX_KEY
BUSYBOX_TAR=$IMAGES/busybox-$BUSYBOX_KEY.tar
if archive_ok "$BUSYBOX_TAR" "$BUSYBOX_REF"; then
    log "busybox: cached ($BUSYBOX_TAR)"
else
    work=$(new_scratch busybox)
    printf '%s\n' "$BB_PASSWD" >"$work/passwd"
    printf '%s\n' "$BB_GROUP" >"$work/group"
    args=(--file "$BUSYBOX=/bin/busybox:0755" --file "$work/passwd=/etc/passwd:0644" --file "$work/group=/etc/group:0644")
    for d in tmp:1777 root:0700 home/nonroot:0755 proc:0555 sys:0555 dev:0755 var:0755; do
        args+=(--dir "$d")
    done
    while read -r applet; do
        [[ -n "$applet" && "$applet" != bin/busybox ]] && args+=(--symlink "$applet=/bin/busybox")
    done < <("$BUSYBOX" --list-full | LC_ALL=C sort -u)
    "$PYTHON" "$OCI" write --out "$BUSYBOX_TAR" --ref "$BUSYBOX_REF" "${args[@]}" \
        --env PATH=/usr/sbin:/usr/bin:/sbin:/bin --cmd '["sh"]' >&2
    log "busybox: wrote $BUSYBOX_TAR ($(size_of "$BUSYBOX_TAR"), $("$BUSYBOX" | head -n1))"
fi

# ---------------------------------------------------------------------------- kvinject base
need_root_tools() {
    ((EUID == 0)) || die "$1 needs root (debootstrap, mounts, buildah storage)"
    local t
    for t in unshare findmnt debootstrap buildah chroot; do
        command -v "$t" >/dev/null || die "$t not found (run tests/node/build.sh: it installs the Debian packages)"
    done
}
DEBOOTSTRAP_VERSION=$(dpkg-query -W -f='${Version}' debootstrap 2>/dev/null || echo none)
BASE_RECIPE="base v1 $BASE_SUITE $BASE_MIRROR $BASE_PACKAGES minbase debootstrap=$DEBOOTSTRAP_VERSION $(sed -n '/^ns_base()/,/^}/p' "$NODE_DIR/images.sh" | sha256sum | cut -c1-16)"
BASE_KEY=$({ echo "$BASE_RECIPE"; echo "$OCI_SHA"; } | sha12)
BASE_REF=kvinject.local/kvinject-base:$BASE_SUITE-$BASE_KEY
BASE_TAR=$IMAGES/kvinject-base-$BASE_SUITE-$BASE_KEY.tar
if archive_ok "$BASE_TAR" "$BASE_REF"; then
    log "kvinject base: cached ($BASE_TAR)"
else
    need_root_tools "the kvinject base image"
    work=$(new_scratch base)
    unshare --mount --propagation private -- "$NODE_DIR/images.sh" __ns_base "$work" "$BASE_TAR" "$BASE_REF" \
        || die "building the base image failed"
    archive_ok "$BASE_TAR" "$BASE_REF" || die "the base archive $BASE_TAR is not readable"
    rm -rf "$work"  # a root-owned rootfs; its mounts died with the namespace
    log "kvinject base: wrote $BASE_TAR ($(size_of "$BASE_TAR"))"
fi

# ---------------------------------------------------------------------------- kvinject, kvinject-fetch
# Exactly what the build context contributes (.dockerignore drops __pycache__), plus the recipe.
kvinject_sources_sha() {
    (
        cd "$REPO_DIR"
        {
            printf '%s\0' Dockerfile .dockerignore pyproject.toml README.md
            find requirements webhook -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0
        } | LC_ALL=C sort -z | xargs -0 sha256sum
    ) | sha256sum | cut -d' ' -f1
}
BUILDAH_VERSION=$(buildah --version 2>/dev/null || echo none)
KV_RECIPE="kvinject v2 serve+fetch base=$BASE_KEY $BUILDAH_VERSION $(sed -n '/^ns_kvinject()/,/^}/p' "$NODE_DIR/images.sh" | sha256sum | cut -c1-16)"
KVINJECT_KEY=$({ echo "$KV_RECIPE"; kvinject_sources_sha; } | sha12)
KVINJECT_REF=kvinject.local/kvinject:$KVINJECT_KEY
KVINJECT_TAR=$IMAGES/kvinject-$KVINJECT_KEY.tar
FETCH_REF=kvinject.local/kvinject-fetch:$KVINJECT_KEY
FETCH_TAR=$IMAGES/kvinject-fetch-$KVINJECT_KEY.tar
if archive_ok "$KVINJECT_TAR" "$KVINJECT_REF" && archive_ok "$FETCH_TAR" "$FETCH_REF"; then
    log "kvinject, kvinject-fetch: cached ($KVINJECT_TAR, $FETCH_TAR)"
else
    need_root_tools "the kvinject images"
    work=$(new_scratch buildah)
    # The mount point for the namespace's bind (see ns_kvinject); removed after when made here.
    if [[ ! -e /var/lib/containers ]]; then
        mkdir /var/lib/containers
        MADE_VARLIB_CONTAINERS=1
    fi
    unshare --mount --propagation private -- "$NODE_DIR/images.sh" __ns_kvinject "$work" "$BASE_TAR" "$BASE_REF" \
        fetch "$FETCH_TAR.partial" "$FETCH_REF" serve "$KVINJECT_TAR.partial" "$KVINJECT_REF" \
        || { rm -f "$KVINJECT_TAR.partial" "$FETCH_TAR.partial"; die "building the kvinject images failed"; }
    mv -f "$FETCH_TAR.partial" "$FETCH_TAR"
    mv -f "$KVINJECT_TAR.partial" "$KVINJECT_TAR"
    archive_ok "$KVINJECT_TAR" "$KVINJECT_REF" || die "the kvinject archive $KVINJECT_TAR is not readable"
    archive_ok "$FETCH_TAR" "$FETCH_REF" || die "the kvinject-fetch archive $FETCH_TAR is not readable"
    log "kvinject: wrote $KVINJECT_TAR ($(size_of "$KVINJECT_TAR")); kvinject-fetch: wrote $FETCH_TAR ($(size_of "$FETCH_TAR"))"
fi

log "done"
cat <<EOF
PAUSE_IMAGE=$PAUSE_REF
PAUSE_IMAGE_TAR=$PAUSE_TAR
BUSYBOX_IMAGE=$BUSYBOX_REF
BUSYBOX_IMAGE_TAR=$BUSYBOX_TAR
KVINJECT_BASE_IMAGE=$BASE_REF
KVINJECT_BASE_IMAGE_TAR=$BASE_TAR
KVINJECT_IMAGE=$KVINJECT_REF
KVINJECT_IMAGE_TAR=$KVINJECT_TAR
FETCH_IMAGE=$FETCH_REF
FETCH_IMAGE_TAR=$FETCH_TAR
EOF
