#!/usr/bin/env bash
# Build (once) and cache the external binaries and manifests used by the e2e tier:
#   kube-apiserver, kube-controller-manager, kubectl   (k8s.io/kubernetes)
#   etcd                                                (go.etcd.io/etcd/server/v3)
#   azwi-webhook                                        (github.com/Azure/azure-workload-identity/cmd/webhook)
#   SecretProviderClass and SecretProviderClassPodStatus CRDs (sigs.k8s.io/secrets-store-csi-driver)
#
# Everything comes from the Go module proxy (no other download), is built with the
# local Go toolchain and stored outside the repo, keyed by version:
#   $KVINJECT_CACHE (default ~/.cache/kvinject)/bin/kubernetes-<v>/{kube-apiserver,kube-controller-manager,kubectl}
#                                           /bin/etcd-<v>/etcd
#                                           /bin/azwi-<v>/azwi-webhook
#                                           /crds/secrets-store-csi-driver-<v>/secrets-store.csi.x-k8s.io_secretproviderclasses.yaml
#                                           /crds/secrets-store-csi-driver-<v>/secrets-store.csi.x-k8s.io_secretproviderclasspodstatuses.yaml
# Each step is skipped when its output already exists and works, so a second run takes
# seconds. Versions are pinned in tests/e2e/versions.env (also read by tests/harness/controlplane.py).
#
# Usage: tests/e2e/build_binaries.sh            # build what is missing
#        KVINJECT_CACHE=/some/dir tests/e2e/build_binaries.sh
#
# Sourced (`source tests/e2e/build_binaries.sh`), it only sets up (versions, cache, lock, scratch
# directory, cleanup trap) and defines its functions, for tests/node/build.sh to reuse:
# `build_kubernetes kubelet kube-scheduler` builds other k8s.io/kubernetes commands the same way.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$HERE/versions.env"
: "${KUBERNETES_VERSION:?}" "${ETCD_VERSION:?}" "${AZWI_VERSION:?}" "${SSCSI_VERSION:?}"

CACHE=${KVINJECT_CACHE:-$HOME/.cache/kvinject}
mkdir -p "$CACHE/bin" "$CACHE/crds" "$CACHE/tmp"
CACHE=$(cd "$CACHE" && pwd)

if command -v go >/dev/null 2>&1; then
    GO=$(command -v go)
elif [[ -x /usr/local/go/bin/go ]]; then
    GO=/usr/local/go/bin/go
else
    echo "build_binaries.sh: no 'go' on PATH nor at /usr/local/go/bin/go" >&2
    exit 1
fi

# Static, reproducible-ish binaries; never fetch another toolchain; 2 parallel
# compile jobs keep peak memory modest on a small machine.
export CGO_ENABLED=0
export GOTOOLCHAIN=local
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-p=2 -buildvcs=false"

START=$SECONDS
log() { printf '[build_binaries +%4ds] %s\n' "$((SECONDS - START))" "$*"; }
die() { printf '[build_binaries] ERROR: %s\n' "$*" >&2; exit 1; }

# Serialise concurrent runs sharing one cache.
exec 9>"$CACHE/.build.lock"
if command -v flock >/dev/null 2>&1; then
    flock 9
fi

# One scratch directory per run for the throwaway modules, removed on exit.
BUILD_TMP=$(mktemp -d "$CACHE/tmp/build.XXXXXX")
cleanup() {
    chmod -R u+w "$BUILD_TMP" 2>/dev/null || true
    rm -rf "$BUILD_TMP"
}
trap cleanup EXIT

new_tmpdir() {  # new_tmpdir NAME -> prints the path of a fresh directory
    local d="$BUILD_TMP/$1"
    mkdir -p "$d"
    printf '%s\n' "$d"
}

# mod_download MODULE@VERSION FIELD -> prints the field (Dir or GoMod) of `go mod download -json`
mod_download() {
    local spec=$1 field=$2 out
    if ! out=$(cd "$CACHE/tmp" && GOFLAGS= "$GO" mod download -json "$spec" 2>&1); then
        die "go mod download $spec failed:
$out"
    fi
    if grep -q '"Error"' <<<"$out"; then
        die "go mod download $spec failed:
$out"
    fi
    sed -n "s/^[[:space:]]*\"$field\": \"\\(.*\\)\",\\{0,1\\}\$/\\1/p" <<<"$out" | head -n1
}

# replaces GO.MOD -> prints every replace directive as "LHS => RHS" (one per line)
replaces() {
    awk '
        /^replace[ \t]*\(/ { inblock = 1; next }
        inblock && /^\)/   { inblock = 0; next }
        inblock            { sub(/\/\/.*/, ""); if ($0 ~ /=>/) { $1 = $1; print }; next }
        /^replace[ \t]/    { sub(/\/\/.*/, ""); sub(/^replace[ \t]+/, ""); $1 = $1; print }
    ' "$1"
}

# godebug_lines GO.MOD -> prints the godebug directives (single-line or block form)
godebug_lines() {
    awk '
        /^godebug[ \t]*\(/ { inblock = 1; print; next }
        inblock            { print; if ($0 ~ /^\)/) inblock = 0; next }
        /^godebug[ \t]/    { print }
    ' "$1"
}

# works BINARY EXPECTED ARGS... -> true when BINARY runs ARGS and prints EXPECTED
works() {
    local bin=$1 expected=$2 out
    shift 2
    [[ -x "$bin" ]] || return 1
    out=$("$bin" "$@" 2>&1) || return 1
    grep -qF -- "$expected" <<<"$out"
}

# gobuild MODDIR OUTPUT PACKAGE LABEL LDFLAGS -> builds into OUTPUT atomically
gobuild() {
    local moddir=$1 output=$2 pkg=$3 label=$4 ldflags=$5 t0=$SECONDS
    log "building $label ..."
    (cd "$moddir" && "$GO" build -mod=mod -trimpath -ldflags "$ldflags" -o "$output.partial" "$pkg") \
        || die "go build $pkg failed"
    mv -f "$output.partial" "$output"
    log "built $label in $((SECONDS - t0))s ($(du -h "$output" | cut -f1))"
}

BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)

# --------------------------------------------------------------------------------------
# Kubernetes: kube-apiserver, kube-controller-manager, kubectl
# --------------------------------------------------------------------------------------
# k8s_works DIR COMMAND VERSION -> true when DIR/COMMAND runs and reports VERSION
k8s_works() {
    if [[ $2 == kubectl ]]; then
        works "$1/$2" "$3" version --client
    else
        works "$1/$2" "$3" --version
    fi
}

# build_kubernetes [COMMAND...] -> builds the k8s.io/kubernetes/cmd/COMMANDs that are missing
# (default: kube-apiserver kube-controller-manager kubectl) into bin/kubernetes-<v>/
build_kubernetes() {
    local v=$KUBERNETES_VERSION out="$CACHE/bin/kubernetes-$KUBERNETES_VERSION"
    local minor=${v#v1.}; minor=${minor%%.*}
    local staging_v="v0.${v#v1.}"
    local wanted=("$@") missing=() b
    ((${#wanted[@]})) || wanted=(kube-apiserver kube-controller-manager kubectl)
    for b in "${wanted[@]}"; do
        k8s_works "$out" "$b" "$v" || missing+=("$b")
    done
    if ((${#missing[@]} == 0)); then
        log "kubernetes $v: cached ${wanted[*]} ($out)"
        return
    fi

    log "kubernetes $v: fetching k8s.io/kubernetes@$v go.mod"
    local gomod
    gomod=$(mod_download "k8s.io/kubernetes@$v" GoMod)
    [[ -f "$gomod" ]] || die "no go.mod for k8s.io/kubernetes@$v"

    # Every staging module of this exact version: lines "k8s.io/x => ./staging/src/k8s.io/x".
    local staging
    staging=$(replaces "$gomod" | awk '$2 == "=>" && $3 ~ /^\.\/staging\/src\// { print $1 }' | sort -u)
    [[ -n "$staging" ]] || die "found no staging replace directives in $gomod"
    log "kubernetes $v: $(wc -l <<<"$staging") staging modules pinned to $staging_v"

    local work
    work=$(new_tmpdir kubernetes)
    {
        echo "module kvinject.invalid/e2e-build/kubernetes"
        echo
        grep -m1 '^go ' "$gomod"
        godebug_lines "$gomod"
        echo
        echo "require k8s.io/kubernetes $v"
        echo
        echo "replace ("
        local m
        for m in $staging; do
            echo "	$m => $m $staging_v"
        done
        echo ")"
    } >"$work/go.mod"

    local ldflags="-s -w" pkgpath
    for pkgpath in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=" -X $pkgpath.gitVersion=$v -X $pkgpath.gitMajor=1 -X $pkgpath.gitMinor=$minor"
        ldflags+=" -X $pkgpath.gitTreeState=clean -X $pkgpath.buildDate=$BUILD_DATE"
    done

    mkdir -p "$out"
    for b in "${missing[@]}"; do
        gobuild "$work" "$out/$b" "k8s.io/kubernetes/cmd/$b" "$b $v" "$ldflags"
        k8s_works "$out" "$b" "$v" || die "built $b does not report $v"
    done
}

# --------------------------------------------------------------------------------------
# etcd
# --------------------------------------------------------------------------------------
build_etcd() {
    local v=$ETCD_VERSION out="$CACHE/bin/etcd-$ETCD_VERSION"
    if works "$out/etcd" "etcd Version: ${v#v}" --version; then
        log "etcd $v: cached ($out)"
        return
    fi
    log "etcd $v: fetching go.etcd.io/etcd/server/v3@$v go.mod"
    local gomod
    gomod=$(mod_download "go.etcd.io/etcd/server/v3@$v" GoMod)
    [[ -f "$gomod" ]] || die "no go.mod for go.etcd.io/etcd/server/v3@$v"

    # Sibling modules replaced by relative paths ("go.etcd.io/etcd/api/v3 => ../api"):
    # pin each to the same released version.
    local siblings
    siblings=$(replaces "$gomod" | awk '$2 == "=>" && $3 ~ /^\.\.\// && $1 ~ /^go\.etcd\.io\/etcd\// { print $1 }' | sort -u)

    local work
    work=$(new_tmpdir etcd)
    {
        echo "module kvinject.invalid/e2e-build/etcd"
        echo
        grep -m1 '^go ' "$gomod"
        echo
        echo "require go.etcd.io/etcd/server/v3 $v"
        if [[ -n "$siblings" ]]; then
            echo
            echo "replace ("
            local m
            for m in $siblings; do
                echo "	$m => $m $v"
            done
            echo ")"
        fi
    } >"$work/go.mod"
    log "etcd $v: pinned sibling modules: $(echo $siblings)"

    mkdir -p "$out"
    gobuild "$work" "$out/etcd" go.etcd.io/etcd/server/v3 "etcd $v" "-s -w"
    works "$out/etcd" "etcd Version: ${v#v}" --version || die "built etcd does not report ${v#v}"
}

# --------------------------------------------------------------------------------------
# Azure Workload Identity webhook
# --------------------------------------------------------------------------------------
build_azwi() {
    local v=$AZWI_VERSION out="$CACHE/bin/azwi-$AZWI_VERSION"
    local mod=github.com/Azure/azure-workload-identity
    if works "$out/azwi-webhook" "\"buildVersion\":\"$v\"" --version; then
        log "azwi-webhook $v: cached ($out)"
        return
    fi
    log "azwi-webhook $v: fetching $mod@$v go.mod"
    local gomod
    gomod=$(mod_download "$mod@$v" GoMod)
    [[ -f "$gomod" ]] || die "no go.mod for $mod@$v"

    # Replace directives of a dependency are ignored by Go: carry over the module-to-module
    # ones; a local-path replace cannot be honoured and is an error.
    local reps local_reps
    reps=$(replaces "$gomod")
    local_reps=$(awk '$NF ~ /^\.\.?\// || $3 ~ /^\.\.?\// || $3 ~ /^\//' <<<"$reps")
    [[ -z "$local_reps" ]] || die "$mod@$v has local replace directives, cannot pin: $local_reps"

    local work
    work=$(new_tmpdir azwi)

    # Its logging library monis.app/mlog is not served by the module proxy reachable
    # here (403 for every version). When that is so, substitute kvinject's own minimal
    # stand-in (tests/e2e/azwi-mlog-shim, same API subset, logs JSON via logr/funcr).
    local mlog_v
    mlog_v=$(awk '$1 == "monis.app/mlog" { print $2; exit }' "$gomod")
    if [[ -n "$mlog_v" ]] && ! (cd "$CACHE/tmp" && GOFLAGS= "$GO" mod download "monis.app/mlog@$mlog_v") >/dev/null 2>&1; then
        log "azwi-webhook $v: monis.app/mlog@$mlog_v unavailable from the module proxy; using tests/e2e/azwi-mlog-shim"
        cp -R "$HERE/azwi-mlog-shim" "$work/mlog"
        [[ -z "$reps" ]] || reps+=$'\n'
        reps+="monis.app/mlog => ./mlog"
    fi

    {
        echo "module kvinject.invalid/e2e-build/azwi"
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

    mkdir -p "$out"
    gobuild "$work" "$out/azwi-webhook" "$mod/cmd/webhook" "azwi-webhook $v" \
        "-s -w -X $mod/pkg/version.BuildVersion=$v -X $mod/pkg/version.BuildTime=$BUILD_DATE"
    works "$out/azwi-webhook" "\"buildVersion\":\"$v\"" --version || die "built azwi-webhook does not report $v"
}

# --------------------------------------------------------------------------------------
# Secrets Store CSI driver: SecretProviderClass CRD
# --------------------------------------------------------------------------------------
fetch_sscsi_crd() {
    # The SecretProviderClass CRD, and the driver's per-pod SecretProviderClassPodStatus (restart-on-change reads it).
    local v=$SSCSI_VERSION out="$CACHE/crds/secrets-store-csi-driver-$SSCSI_VERSION" kind name dir=""
    for kind in SecretProviderClass SecretProviderClassPodStatus; do
        name=secrets-store.csi.x-k8s.io_${kind,,}es.yaml
        if [[ -s "$out/$name" ]] && grep -q "kind: $kind\$" "$out/$name"; then
            log "$kind CRD $v: cached ($out/$name)"
            continue
        fi
        log "$kind CRD $v: downloading sigs.k8s.io/secrets-store-csi-driver@$v"
        [[ -n "$dir" ]] || dir=$(mod_download "sigs.k8s.io/secrets-store-csi-driver@$v" Dir)
        [[ -f "$dir/config/crd/bases/$name" ]] || die "$name not found in sigs.k8s.io/secrets-store-csi-driver@$v ($dir)"
        mkdir -p "$out"
        install -m 0644 "$dir/config/crd/bases/$name" "$out/$name.partial"
        mv -f "$out/$name.partial" "$out/$name"
        log "$kind CRD $v: copied to $out/$name"
    done
}

# Run only when executed, not when sourced.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    log "go: $("$GO" version)"
    build_kubernetes
    build_etcd
    build_azwi
    fetch_sscsi_crd
    log "done in $((SECONDS - START))s"
    echo "KVINJECT_CACHE=$CACHE"
fi
