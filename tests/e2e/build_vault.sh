#!/usr/bin/env bash
# Build (once) and cache HashiCorp Vault for the Vault store's e2e tests (tests/e2e/vault/):
#   $KVINJECT_CACHE (default ~/.cache/kvinject)/bin/vault-<v>/vault   (github.com/hashicorp/vault)
# from the Go module proxy with the local Go toolchain, like build_binaries.sh (whose helpers this
# sources), version pinned as VAULT_VERSION in tests/e2e/versions.env. Skipped when the cached binary
# reports that version. Cold: ~10 min and ~4 GB on 2 cores, ~13 GB of Go caches (see E2E-NOTES).
# Vault is BUSL-1.1: built for tests only, never shipped.
#
# Usage: tests/e2e/build_vault.sh         # prints VAULT=<path> on stdout, logs on stderr
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=build_binaries.sh
source "$HERE/build_binaries.sh"
: "${VAULT_VERSION:?}"

log() { printf '[build_vault +%4ds] %s\n' "$((SECONDS - START))" "$*" >&2; }

# Vault's own module-to-module replace directives (a dependency's replaces are ignored, so the
# throwaway module repeats them): the original go-proxyproto is refused by the proxy.
VAULT_REPLACES="github.com/ma314smith/signedxml v1.1.1 => github.com/moov-io/signedxml v1.1.1
github.com/pires/go-proxyproto v1.0.0 => github.com/peteski22/go-proxyproto v1.0.0"

# The only two modules whose zips are served but whose checksums the checksum database lacks;
# every other module stays verified.
VAULT_GONOSUMDB=github.com/hashicorp/vault-plugin-auth-azure,github.com/hashicorp/vault-plugin-secrets-openldap

build_vault() {
    local v=$VAULT_VERSION out="$CACHE/bin/vault-$VAULT_VERSION" mod=github.com/hashicorp/vault
    if works "$out/vault" "Vault $v" version; then
        log "vault $v: cached ($out)"
        return
    fi
    log "vault $v: fetching $mod@$v go.mod"
    local gomod
    gomod=$(mod_download "$mod@$v" GoMod)
    [[ -f "$gomod" ]] || die "no go.mod for $mod@$v"

    # Its local replaces (./api, ./sdk) point at published versions of the same modules and are
    # dropped; the module-to-module ones must be exactly the two known above, or this pin is stale.
    local reps
    reps=$(replaces "$gomod" | awk '$3 !~ /^\.\.?\//' | sort)
    [[ "$reps" == "$(sort <<<"$VAULT_REPLACES")" ]] \
        || die "$mod@$v replace directives changed; expected:
$VAULT_REPLACES
found:
$reps"

    local work
    work=$(new_tmpdir vault)
    {
        echo "module kvinject.invalid/e2e-build/vault"
        echo
        grep -m1 '^go ' "$gomod"
        echo
        echo "require $mod $v"
        echo
        echo "replace ("
        sed 's/^/	/' <<<"$VAULT_REPLACES"
        echo ")"
    } >"$work/go.mod"

    mkdir -p "$out"
    GONOSUMDB=$VAULT_GONOSUMDB gobuild "$work" "$out/vault" "$mod" "vault $v" "-s -w"
    works "$out/vault" "Vault $v" version || die "built vault does not report $v"
}

build_vault
echo "VAULT=$CACHE/bin/vault-$VAULT_VERSION/vault"
