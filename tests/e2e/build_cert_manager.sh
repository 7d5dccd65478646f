#!/usr/bin/env bash
# Build (once) and cache cert-manager's controller and cainjector and its CRDs, for the e2e test of the
# cert-manager overlay (tests/e2e/test_certificates.py). From the Go module proxy only, like
# build_binaries.sh (whose helpers this sources), keyed by version:
#   $KVINJECT_CACHE (default ~/.cache/kvinject)/bin/cert-manager-<v>/{controller,cainjector}
#                                              /crds/cert-manager-<v>/*.yaml
# CERT_MANAGER_VERSION (versions.env) is v1.11.5: the newest release whose module github.com/cert-manager/cert-manager
# still holds cmd/controller and cmd/cainjector. From v1.12 they are modules of their own
# (github.com/cert-manager/cert-manager/cmd/controller), which the module proxy does not serve (404).
# Test only: never shipped.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=build_binaries.sh
source "$HERE/build_binaries.sh"
: "${CERT_MANAGER_VERSION:?}" "${CERT_MANAGER_CRDS_VERSION:?}"

build_cert_manager() {
    local v=$CERT_MANAGER_VERSION mod=github.com/cert-manager/cert-manager
    local out="$CACHE/bin/cert-manager-$v" crds="$CACHE/crds/cert-manager-$v"
    if works "$out/controller" "--cluster-resource-namespace" --help && works "$out/cainjector" "--kubeconfig" --help \
        && [[ -f "$crds/crd-certificates.yaml" ]]; then
        log "cert-manager $v: cached ($out)"
        return
    fi
    local dir gomod work
    dir=$(mod_download "$mod@$v" Dir)
    gomod=$(mod_download "$mod@$v" GoMod)
    work=$(new_tmpdir cert-manager)
    {
        echo "module kvinject.invalid/e2e-build/cert-manager"
        echo
        echo "go $("$GO" env GOVERSION | sed 's/^go//; s/\.[0-9]*$//')"
        echo
        echo "require $mod $v"
        # cert-manager's own replace directives (a go.mod's replaces apply only in its own main module).
        replaces "$gomod" | sed 's/^/replace /'
    } >"$work/go.mod"
    printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "%s/cmd/cainjector"\n\t_ "%s/cmd/controller"\n)\n' \
        "$mod" "$mod" >"$work/tools.go"
    (cd "$work" && GOFLAGS=-mod=mod "$GO" mod tidy) || die "go mod tidy for cert-manager $v failed"
    mkdir -p "$out"
    gobuild "$work" "$out/controller" "$mod/cmd/controller" "cert-manager controller $v" "-s -w"
    gobuild "$work" "$out/cainjector" "$mod/cmd/cainjector" "cert-manager cainjector $v" "-s -w"
    mkdir -p "$crds"
    for f in "$dir"/deploy/crds/crd-*.yaml; do
        install -m 0644 "$f" "$crds/$(basename "$f")"
    done
    log "cert-manager $v: CRDs copied to $crds"
}

# The current release's CRDs (its module has them at deploy/crds, with no templating): the overlay's objects are
# also checked against these schemas, by the apiserver (server-side dry run).
fetch_cert_manager_crds() {
    local v=$CERT_MANAGER_CRDS_VERSION out="$CACHE/crds/cert-manager-$CERT_MANAGER_CRDS_VERSION" dir
    if [[ -f "$out/cert-manager.io_certificates.yaml" ]]; then
        log "cert-manager CRDs $v: cached ($out)"
        return
    fi
    dir=$(mod_download "github.com/cert-manager/cert-manager@$v" Dir)
    mkdir -p "$out"
    for f in "$dir"/deploy/crds/*.io_*.yaml; do
        install -m 0644 "$f" "$out/$(basename "$f")"
    done
    log "cert-manager CRDs $v: copied to $out"
}

build_cert_manager
fetch_cert_manager_crds
