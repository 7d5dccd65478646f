#!/usr/bin/env bash
# Build (once) and cache the load generator of the load benchmark (bench/load.py):
#   vegeta   (github.com/tsenart/vegeta/v12, constant-rate / open-model HTTP load, exact percentiles)
# built with the local Go toolchain from the Go module proxy into
#   $KVINJECT_CACHE (default ~/.cache/kvinject)/bin/vegeta-<version>/vegeta
# and make sure matplotlib (for bench/latency.png) is in the venv.
#
# When vegeta cannot be built, fall back to Debian's wrk (apt-get install -y wrk; needs root):
# bench/load.py refuses to run without vegeta, since wrk is closed-loop and has no fixed
# request rate, but the fallback keeps a usable HTTP load tool on the machine.
#
# Usage: bench/build_tools.sh                    # build what is missing (seconds when cached)
#        bench/build_tools.sh --no-python        # only the load generator (CI's test step)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=versions.env
source "$HERE/versions.env"
: "${VEGETA_VERSION:?}"
VEGETA_MODULE=github.com/tsenart/vegeta/v12
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}

WITH_PYTHON=1
[[ "${1:-}" == "--no-python" ]] && WITH_PYTHON=0

CACHE=${KVINJECT_CACHE:-$HOME/.cache/kvinject}
mkdir -p "$CACHE/bin" "$CACHE/tmp"
CACHE=$(cd "$CACHE" && pwd)
OUT="$CACHE/bin/vegeta-$VEGETA_VERSION"

log() { printf '[build_tools] %s\n' "$*"; }

if command -v go >/dev/null 2>&1; then
    GO=$(command -v go)
elif [[ -x /usr/local/go/bin/go ]]; then
    GO=/usr/local/go/bin/go
else
    GO=
fi

vegeta_works() {
    [[ -x "$OUT/vegeta" ]] && "$OUT/vegeta" -version 2>&1 | grep -qF "${VEGETA_VERSION#v}"
}

build_vegeta() {
    [[ -n "$GO" ]] || { log "no Go toolchain"; return 1; }
    exec 9>"$CACHE/.build-vegeta.lock"
    command -v flock >/dev/null 2>&1 && flock 9
    vegeta_works && return 0
    local gobin t0=$SECONDS
    gobin=$(mktemp -d "$CACHE/tmp/vegeta.XXXXXX")
    log "building vegeta $VEGETA_VERSION with $("$GO" version) ..."
    # `go install module@version` builds with the module's own go.mod; the -X flags fill in
    # what its release builds print for -version.
    if ! CGO_ENABLED=0 GOTOOLCHAIN=local GOBIN="$gobin" GOFLAGS="-p=2 -buildvcs=false" "$GO" install -trimpath \
        -ldflags "-s -w -X main.Version=$VEGETA_VERSION -X main.Commit=module-proxy -X main.Date=unknown" \
        "$VEGETA_MODULE@$VEGETA_VERSION"; then
        rm -rf "$gobin"
        return 1
    fi
    mkdir -p "$OUT"
    mv -f "$gobin/vegeta" "$OUT/vegeta"
    rm -rf "$gobin"
    log "built vegeta in $((SECONDS - t0))s: $OUT/vegeta"
    vegeta_works
}

if vegeta_works; then
    log "vegeta $VEGETA_VERSION: cached ($OUT/vegeta)"
elif build_vegeta; then
    :
else
    log "vegeta could not be built; falling back to wrk from Debian"
    if ! command -v wrk >/dev/null 2>&1; then
        if [[ $(id -u) == 0 ]]; then
            apt-get install -y wrk >/dev/null || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
        else
            log "not root: cannot apt-get install wrk"
            exit 1
        fi
    fi
    log "wrk: $(command -v wrk) (bench/load.py needs vegeta for fixed-rate steps)"
    exit 1
fi

if ((WITH_PYTHON)); then
    if "$PYTHON" -c 'import matplotlib' 2>/dev/null; then
        log "matplotlib: present"
    else
        log "installing matplotlib into $("$PYTHON" -c 'import sys; print(sys.prefix)')"
        "$PYTHON" -m pip install -q 'matplotlib>=3.8'
    fi
fi
echo "VEGETA=$OUT/vegeta"
