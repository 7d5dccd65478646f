#!/usr/bin/env bash
# Build (once) and cache what a real node needs (issue 14), and install its Debian packages:
#
#   $KVINJECT_CACHE (default ~/.cache/kvinject)/bin/
#       kubernetes-<v>/{kubelet,kube-scheduler}             k8s.io/kubernetes (throwaway module, as
#                                                           tests/e2e/build_binaries.sh builds the rest)
#       secrets-store-csi-driver-<v>/secrets-store-csi-driver   sigs.k8s.io/secrets-store-csi-driver/cmd/...
#                                                           (monis.app/mlog replaced by tests/node/mlog-shim)
#       provider-azure-<v>/secrets-store-csi-driver-provider-azure
#                                                           github.com/Azure/secrets-store-csi-driver-provider-azure/cmd
#       registrar-<sha12>/registrar                         tests/node/registrar (our plugin registration service)
#       pause-<sha12>/pause                                 tests/node/pause/pause.c, gcc -static
#   $KVINJECT_CACHE/manifests/secrets-store-csi-driver-<v>/   the driver's own deployment files the node
#       applies, from its module: deploy/{csidriver,rbac-secretproviderclass,rbac-secretprovidersyncing}.yaml,
#       deploy/secrets-store.csi.x-k8s.io_secretproviderclasspodstatuses.yaml and the chart's
#       templates/csidriver.yaml (as chart-csidriver.yaml: where tokenRequests come from)
#
#   Debian packages (apt-get, only those missing; root needed then): containerd, runc,
#   containernetworking-plugins, busybox-static, buildah, debootstrap (versions in versions.env).
#
# Go modules come from the Go module proxy only; checksum verification stays on, except for the
# one module path the checksum database lacks (the Azure provider: GONOSUMDB for that path only).
# Every step is skipped when its output exists and works, so a warm run takes about a second.
# Our own programs are keyed by a hash of their sources (sha12 above).
#
# Prints KEY=path lines on stdout for the harness (logs go to stderr):
#   KUBELET= KUBE_SCHEDULER= KUBE_PROXY= SSCSI_DRIVER= AZURE_PROVIDER= REGISTRAR= PAUSE= SSCSI_MANIFESTS=
#
# Usage: tests/node/build.sh                 # or: make node-binaries
#        KVINJECT_CACHE=/some/dir tests/node/build.sh
set -euo pipefail

NODE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$NODE_DIR/../.." && pwd)

# Versions, cache, the Go toolchain (GOTOOLCHAIN=local, -p=2, CGO_ENABLED=0), the cache lock,
# a scratch directory removed on exit, and the helpers (mod_download, replaces, godebug_lines,
# works, gobuild, build_kubernetes).
# shellcheck source=../e2e/build_binaries.sh
source "$REPO_DIR/tests/e2e/build_binaries.sh"
# shellcheck source=versions.env
source "$NODE_DIR/versions.env"
: "${KUBERNETES_VERSION:?}" "${SSCSI_VERSION:?}" "${AZURE_PROVIDER_VERSION:?}"

# Logs to stderr: stdout carries the KEY=path lines.
log() { printf '[node-build +%4ds] %s\n' "$((SECONDS - START))" "$*" >&2; }
die() { printf '[node-build] ERROR: %s\n' "$*" >&2; exit 1; }

# tree_sha PATH... -> sha256 over the relative names and contents of the files under PATHs
tree_sha() {
    local p
    for p in "$@"; do
        (cd "$p" && find . -type f ! -name '*~' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    done | sha256sum | cut -c1-64
}

# --------------------------------------------------------------------------------------
# Debian packages
# --------------------------------------------------------------------------------------
# name=pinned version ("" = any version: already part of the machine image, needed to build)
DEBS=(
    "containerd=$DEB_CONTAINERD"
    "runc=$DEB_RUNC"
    "containernetworking-plugins=$DEB_CONTAINERNETWORKING_PLUGINS"
    "busybox-static=$DEB_BUSYBOX_STATIC"
    "buildah=$DEB_BUILDAH"
    "debootstrap=$DEB_DEBOOTSTRAP"
    "gcc="
    "libc6-dev="
)

deb_installed_version() {  # NAME -> prints the installed version, fails when not installed
    local st
    st=$(dpkg-query -W -f='${db:Status-Status} ${Version}' "$1" 2>/dev/null) || return 1
    [[ $st == "installed "* ]] || return 1
    printf '%s\n' "${st#installed }"
}

deb_available() {  # NAME VERSION -> true when the apt lists offer NAME at VERSION
    apt-cache madison "$1" 2>/dev/null | awk -F'|' '{ gsub(/ /, "", $2); print $2 }' | grep -qxF -- "$2"
}

ensure_debs() {
    local spec name want have missing=()
    for spec in "${DEBS[@]}"; do
        name=${spec%%=*} want=${spec#*=}
        if have=$(deb_installed_version "$name"); then
            [[ -z $want || $have == "$want" ]] || log "note: $name $have installed, versions.env pins $want (kept)"
        else
            missing+=("$spec")
        fi
    done
    if ((${#missing[@]} == 0)); then
        log "debian packages: installed (containerd $(deb_installed_version containerd), runc $(deb_installed_version runc), buildah $(deb_installed_version buildah))"
        return
    fi
    ((EUID == 0)) || die "missing Debian packages (${missing[*]%%=*}); run as root or: sudo apt-get install ${missing[*]%%=*}"
    command -v apt-get >/dev/null || die "missing Debian packages (${missing[*]%%=*}) and no apt-get"

    # Refresh the lists once when one of them is unknown or not at its pinned version.
    local need_update=0
    for spec in "${missing[@]}"; do
        name=${spec%%=*} want=${spec#*=}
        if [[ -n $want ]]; then deb_available "$name" "$want" || need_update=1
        else apt-cache show "$name" >/dev/null 2>&1 || need_update=1
        fi
    done
    if ((need_update)); then
        log "apt-get update"
        apt-get update -qq >&2 || die "apt-get update failed"
    fi

    local args=()
    for spec in "${missing[@]}"; do
        name=${spec%%=*} want=${spec#*=}
        if [[ -n $want ]] && deb_available "$name" "$want"; then
            args+=("$name=$want")
        else
            [[ -z $want ]] || log "WARNING: $name $want is no longer offered by the mirror; installing its candidate (update versions.env)"
            args+=("$name")
        fi
    done
    log "apt-get install ${args[*]}"
    local t0=$SECONDS
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${args[@]}" >&2 \
        || die "apt-get install ${args[*]} failed"
    for spec in "${missing[@]}"; do
        deb_installed_version "${spec%%=*}" >/dev/null || die "${spec%%=*} still not installed after apt-get install"
    done
    log "debian packages installed in $((SECONDS - t0))s"
}

# --------------------------------------------------------------------------------------
# A main package from a released module that `go install pkg@v` cannot build, through a
# throwaway module: require MODULE VERSION, carry over its module-to-module replace directives,
# replace monis.app/mlog (refused by the module proxy) by tests/node/mlog-shim when needed.
#   build_from_module LABEL MODULE VERSION PACKAGE OUTPUT LDFLAGS
# GONOSUMDB in the caller's environment exempts a module path from the checksum database.
# --------------------------------------------------------------------------------------
build_from_module() {
    local label=$1 mod=$2 v=$3 pkg=$4 output=$5 ldflags=$6
    log "$label $v: fetching $mod@$v go.mod"
    local gomod
    gomod=$(mod_download "$mod@$v" GoMod)
    [[ -f "$gomod" ]] || die "no go.mod for $mod@$v"

    local reps local_reps
    reps=$(replaces "$gomod")
    local_reps=$(awk '$NF ~ /^\.\.?\// || $3 ~ /^\.\.?\// || $3 ~ /^\//' <<<"$reps")
    [[ -z "$local_reps" ]] || die "$mod@$v has local replace directives, cannot pin: $local_reps"

    local work
    work=$(new_tmpdir "$(basename "$output")")
    local mlog_v
    mlog_v=$(awk '$1 == "monis.app/mlog" { print $2; exit }' "$gomod")
    if [[ -n "$mlog_v" ]] && ! (cd "$CACHE/tmp" && GOFLAGS='' "$GO" mod download "monis.app/mlog@$mlog_v") >/dev/null 2>&1; then
        log "$label $v: monis.app/mlog@$mlog_v unavailable from the module proxy; using tests/node/mlog-shim"
        cp -R "$NODE_DIR/mlog-shim" "$work/mlog"
        [[ -z "$reps" ]] || reps+=$'\n'
        reps+="monis.app/mlog => ./mlog"
    fi

    {
        echo "module kvinject.invalid/node-build/$(basename "$output")"
        echo
        grep -m1 '^go ' "$gomod"
        godebug_lines "$gomod"
        echo
        echo "require $mod $v"
        if [[ -n "$reps" ]]; then
            echo
            echo "replace ("
            sed 's/^/	/' <<<"$reps"
            echo ")"
        fi
    } >"$work/go.mod"

    mkdir -p "$(dirname "$output")"
    gobuild "$work" "$output" "$pkg" "$label $v" "$ldflags"
}

# --------------------------------------------------------------------------------------
# Secrets Store CSI driver
# --------------------------------------------------------------------------------------
build_sscsi_driver() {
    local v=$SSCSI_VERSION mod=sigs.k8s.io/secrets-store-csi-driver
    local bin="$CACHE/bin/secrets-store-csi-driver-$v/secrets-store-csi-driver"
    local stamp="$bin.mlog-shim-sha256" shim_sha
    shim_sha=$(tree_sha "$NODE_DIR/mlog-shim")
    if works "$bin" "\"BuildVersion\":\"$v\"" --version && [[ "$(cat "$stamp" 2>/dev/null)" == "$shim_sha" ]]; then
        log "secrets-store-csi-driver $v: cached ($bin)"
        return
    fi
    build_from_module secrets-store-csi-driver "$mod" "$v" "$mod/cmd/secrets-store-csi-driver" "$bin" \
        "-s -w -X $mod/pkg/version.BuildVersion=$v -X $mod/pkg/version.BuildTime=$BUILD_DATE -X $mod/pkg/version.Vcs=module-$v"
    works "$bin" "\"BuildVersion\":\"$v\"" --version || die "built secrets-store-csi-driver does not report $v"
    echo "$shim_sha" >"$stamp"
}

# The driver's deployment files (module source, same version as the binary), copied once.
SSCSI_MANIFEST_FILES=(
    deploy/csidriver.yaml
    deploy/rbac-secretproviderclass.yaml
    deploy/rbac-secretprovidersyncing.yaml
    deploy/secrets-store.csi.x-k8s.io_secretproviderclasspodstatuses.yaml
    charts/secrets-store-csi-driver/templates/csidriver.yaml
)
SSCSI_MANIFESTS=
fetch_sscsi_manifests() {
    local v=$SSCSI_VERSION f
    SSCSI_MANIFESTS="$CACHE/manifests/secrets-store-csi-driver-$v"
    local stamp="$SSCSI_MANIFESTS/.complete"
    if [[ -f "$stamp" ]]; then
        log "secrets-store-csi-driver $v manifests: cached ($SSCSI_MANIFESTS)"
        return
    fi
    local dir
    dir=$(mod_download "sigs.k8s.io/secrets-store-csi-driver@$v" Dir)
    mkdir -p "$SSCSI_MANIFESTS"
    for f in "${SSCSI_MANIFEST_FILES[@]}"; do
        [[ -f "$dir/$f" ]] || die "$f not found in sigs.k8s.io/secrets-store-csi-driver@$v ($dir)"
    done
    for f in "${SSCSI_MANIFEST_FILES[@]:0:4}"; do
        install -m 0644 "$dir/$f" "$SSCSI_MANIFESTS/$(basename "$f")"
    done
    install -m 0644 "$dir/${SSCSI_MANIFEST_FILES[4]}" "$SSCSI_MANIFESTS/chart-csidriver.yaml"
    touch "$stamp"
    log "secrets-store-csi-driver $v manifests: copied to $SSCSI_MANIFESTS"
}

# --------------------------------------------------------------------------------------
# Azure Key Vault provider for the Secrets Store CSI driver
# --------------------------------------------------------------------------------------
build_azure_provider() {
    local v=$AZURE_PROVIDER_VERSION mod=github.com/Azure/secrets-store-csi-driver-provider-azure
    local bin="$CACHE/bin/provider-azure-$v/secrets-store-csi-driver-provider-azure"
    if works "$bin" "\"version\":\"$v\"" --version; then
        log "azure provider $v: cached ($bin)"
        return
    fi
    # Its zip is served but its checksum is missing from the checksum database: exempt exactly
    # this module path (verification stays on for every other module).
    GONOSUMDB=$mod build_from_module "azure provider" "$mod" "$v" "$mod/cmd" "$bin" \
        "-s -w -X $mod/pkg/version.BuildVersion=$v -X $mod/pkg/version.BuildDate=$BUILD_DATE -X $mod/pkg/version.Vcs=module-$v"
    works "$bin" "\"version\":\"$v\"" --version || die "built azure provider does not report $v"
}

# --------------------------------------------------------------------------------------
# Our plugin registration service (stands in for node-driver-registrar, not served here)
# --------------------------------------------------------------------------------------
REGISTRAR_BIN=
build_registrar() {
    local src="$NODE_DIR/registrar" sha
    sha=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-12)
    REGISTRAR_BIN="$CACHE/bin/registrar-$sha/registrar"
    if works "$REGISTRAR_BIN" kvinject-registrar -version; then
        log "registrar: cached ($REGISTRAR_BIN)"
        return
    fi
    # Build from a copy so that -mod=mod never rewrites the checked-in go.mod/go.sum.
    local work
    work=$(new_tmpdir registrar)
    cp "$src/go.mod" "$src/go.sum" "$src/main.go" "$work/"
    mkdir -p "$(dirname "$REGISTRAR_BIN")"
    gobuild "$work" "$REGISTRAR_BIN" . "registrar $sha" "-s -w"
    works "$REGISTRAR_BIN" kvinject-registrar -version || die "built registrar does not print its version"
}

# --------------------------------------------------------------------------------------
# Static pause binary (the pod sandbox's process)
# --------------------------------------------------------------------------------------
PAUSE_BIN=
PAUSE_CFLAGS=(-static -O2 -s -Wall -Wextra -Werror)
build_pause() {
    local src="$NODE_DIR/pause/pause.c" sha
    command -v gcc >/dev/null || die "gcc not found (Debian package gcc)"
    sha=$({ cat "$src"; echo "${PAUSE_CFLAGS[*]}"; gcc -dumpfullversion; } | sha256sum | cut -c1-12)
    PAUSE_BIN="$CACHE/bin/pause-$sha/pause"
    if works "$PAUSE_BIN" kvinject-pause -v && file_is_static "$PAUSE_BIN"; then
        log "pause: cached ($PAUSE_BIN)"
        return
    fi
    mkdir -p "$(dirname "$PAUSE_BIN")"
    gcc "${PAUSE_CFLAGS[@]}" -o "$PAUSE_BIN.partial" "$src" \
        || die "gcc -static failed (static libc: Debian package libc6-dev)"
    mv -f "$PAUSE_BIN.partial" "$PAUSE_BIN"
    works "$PAUSE_BIN" kvinject-pause -v || die "built pause does not print its version"
    file_is_static "$PAUSE_BIN" || die "built pause is not statically linked"
    log "built pause ($(du -h "$PAUSE_BIN" | cut -f1)): $PAUSE_BIN"
}

file_is_static() {  # BINARY -> true when it has no program interpreter (no dynamic loader)
    local headers
    headers=$(LC_ALL=C readelf -l "$1" 2>/dev/null) || return 1
    ! grep -q 'Requesting program interpreter' <<<"$headers"
}

log "go: $("$GO" version)"
ensure_debs
build_kubernetes kubelet kube-scheduler kube-proxy
build_sscsi_driver
fetch_sscsi_manifests
build_azure_provider
build_registrar
build_pause
log "done in $((SECONDS - START))s"

K8S_DIR="$CACHE/bin/kubernetes-$KUBERNETES_VERSION"
cat <<EOF
KVINJECT_CACHE=$CACHE
KUBELET=$K8S_DIR/kubelet
KUBE_SCHEDULER=$K8S_DIR/kube-scheduler
KUBE_PROXY=$K8S_DIR/kube-proxy
SSCSI_DRIVER=$CACHE/bin/secrets-store-csi-driver-$SSCSI_VERSION/secrets-store-csi-driver
AZURE_PROVIDER=$CACHE/bin/provider-azure-$AZURE_PROVIDER_VERSION/secrets-store-csi-driver-provider-azure
REGISTRAR=$REGISTRAR_BIN
PAUSE=$PAUSE_BIN
SSCSI_MANIFESTS=$SSCSI_MANIFESTS
EOF
