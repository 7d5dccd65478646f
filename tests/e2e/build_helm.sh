#!/usr/bin/env bash
# Build (once) and cache Helm for the chart tests (tests/chart/):
#   $KVINJECT_CACHE (default ~/.cache/kvinject)/bin/helm-<v>/helm   (helm.sh/helm/v3/cmd/helm)
# from the Go module proxy with the local Go toolchain, version pinned as HELM_VERSION in
# tests/e2e/versions.env. Skipped when the cached binary reports that version (a warm run
# takes well under a second). Called by `make e2e-binaries` after build_binaries.sh.
#
# Usage: tests/e2e/build_helm.sh         # prints HELM=<path> on stdout, logs on stderr
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# Versions, cache, Go toolchain settings (GOTOOLCHAIN=local, -p=2, CGO_ENABLED=0), the cache
# lock and the helpers (works, log, die).
# shellcheck source=build_binaries.sh
source "$REPO_DIR/tests/e2e/build_binaries.sh"
: "${HELM_VERSION:?}"

log() { printf '[build_helm +%4ds] %s\n' "$((SECONDS - START))" "$*" >&2; }

build_helm() {
    local v=$HELM_VERSION out="$CACHE/bin/helm-$HELM_VERSION" mod=helm.sh/helm/v3
    if works "$out/helm" "Version:\"$v\"" version; then
        log "helm $v: cached ($out)"
        return
    fi
    # Its go.mod has no replace directives: `go install module@version` builds with exactly
    # the module's own requirements and go.sum. The -X flag sets what `helm version` prints
    # (a module build otherwise reports only the minor, "v3.21").
    local gobin t0=$SECONDS
    gobin=$(new_tmpdir helm)
    log "helm $v: building $mod/cmd/helm ..."
    (cd "$CACHE/tmp" && GOBIN="$gobin" "$GO" install -trimpath \
        -ldflags "-s -w -X $mod/internal/version.version=$v -X $mod/internal/version.gitTreeState=clean" \
        "$mod/cmd/helm@$v") || die "go install $mod/cmd/helm@$v failed"
    mkdir -p "$out"
    mv -f "$gobin/helm" "$out/helm"
    log "helm $v: built in $((SECONDS - t0))s ($(du -h "$out/helm" | cut -f1))"
    works "$out/helm" "Version:\"$v\"" version || die "built helm does not report $v"
}

build_helm
echo "HELM=$CACHE/bin/helm-$HELM_VERSION/helm"
