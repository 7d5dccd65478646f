#!/usr/bin/env bash
# Build (once) and cache provider-view, the differential oracle of tests/differential: a small Go
# program (this directory) that reads SecretProviderClass parameters with the Azure Key Vault
# provider's own parsing functions (github.com/Azure/secrets-store-csi-driver-provider-azure,
# the version required in go.mod, from the Go module proxy).
#
#   $KVINJECT_CACHE (default ~/.cache/kvinject)/bin/provider-view-<version>/provider-view
#                                                                       /provider-view.source-sha256
#
# Keyed by the provider version; rebuilt only when the binary is absent, does not run, or was
# built from other sources than this directory's go.mod, go.sum and main.go (the .source-sha256
# stamp, also checked by tests/differential/test_provider_view.py). A cached run takes well
# under a second.
#
# The provider module's checksum is missing from the checksum database, so exactly that module
# path is exempted (GONOSUMDB); its go.sum lines, committed here, come from the download itself
# and still pin its content. Checksum verification stays on for every other module.
#
# Usage: tests/provider_view/build.sh             # build when missing, print the binary's path
#        KVINJECT_CACHE=/some/dir tests/provider_view/build.sh
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MODULE=github.com/Azure/secrets-store-csi-driver-provider-azure
VERSION=$(awk -v m="$MODULE" '$1 == m { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$HERE/go.mod")
[[ -n "$VERSION" ]] || { echo "build.sh: no $MODULE requirement in $HERE/go.mod" >&2; exit 1; }

CACHE=${KVINJECT_CACHE:-$HOME/.cache/kvinject}
mkdir -p "$CACHE/bin" "$CACHE/tmp"
CACHE=$(cd "$CACHE" && pwd)
OUT="$CACHE/bin/provider-view-$VERSION"
BIN="$OUT/provider-view"
STAMP="$BIN.source-sha256"

log() { printf '[provider-view] %s\n' "$*" >&2; }

# The same digest tests/differential/test_provider_view.py computes: sha256 of the three files
# concatenated in this order.
SOURCE_SHA=$(cat "$HERE/go.mod" "$HERE/go.sum" "$HERE/main.go" | sha256sum | cut -d' ' -f1)

fresh() {
    [[ -x "$BIN" && -f "$STAMP" ]] || return 1
    [[ "$(cat "$STAMP")" == "$SOURCE_SHA" ]] || return 1
    "$BIN" --version 2>/dev/null | grep -qF -- "$MODULE $VERSION"
}

if fresh; then
    log "cached ($BIN)"
    echo "$BIN"
    exit 0
fi

if command -v go >/dev/null 2>&1; then
    GO=$(command -v go)
elif [[ -x /usr/local/go/bin/go ]]; then
    GO=/usr/local/go/bin/go
else
    echo "build.sh: no 'go' on PATH nor at /usr/local/go/bin/go" >&2
    exit 1
fi

# Serialise concurrent runs sharing one cache, then look again.
exec 9>"$CACHE/.build-provider-view.lock"
command -v flock >/dev/null 2>&1 && flock 9
if fresh; then
    log "cached ($BIN)"
    echo "$BIN"
    exit 0
fi

# Build from a copy so that -mod=mod never rewrites the checked-in go.mod/go.sum.
WORK=$(mktemp -d "$CACHE/tmp/provider-view.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cp "$HERE/go.mod" "$HERE/go.sum" "$HERE/main.go" "$WORK/"

t0=$SECONDS
log "building with $("$GO" version) against $MODULE $VERSION ..."
mkdir -p "$OUT"
(
    cd "$WORK"
    export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod GONOSUMDB="$MODULE"
    "$GO" build -p=2 -buildvcs=false -trimpath -ldflags "-s -w" -o "$BIN.partial" .
)
mv -f "$BIN.partial" "$BIN"
echo "$SOURCE_SHA" >"$STAMP"
fresh || { echo "build.sh: the built $BIN does not report $MODULE $VERSION" >&2; exit 1; }
log "built in $((SECONDS - t0))s ($(du -h "$BIN" | cut -f1)): $BIN"
echo "$BIN"
