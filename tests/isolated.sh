#!/usr/bin/env bash
# Run a command inside a private network namespace that has only loopback, when this
# machine allows it (root + unshare). Every server the tests start, including peers that
# bind all interfaces (the Azure Workload Identity webhook has no host flag), is then
# reachable from this machine only. KVINJECT_NETNS=1 tells the tests they are isolated.
set -euo pipefail
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && unshare --net true 2>/dev/null; then
    exec unshare --net sh -c 'PATH="$PATH:/usr/sbin:/sbin"; ip link set lo up && KVINJECT_NETNS=1 exec "$@"' sh "$@"
fi
echo "isolated.sh: cannot create a private network namespace here; running without one" >&2
exec "$@"
