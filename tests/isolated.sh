#!/usr/bin/env bash
# Run a command inside private network, mount and PID namespaces, when this machine allows them
# (root + unshare). Every server the tests start, including peers that bind all interfaces (the Azure
# Workload Identity webhook has no host flag), is then reachable from this machine only; every mount
# made inside dies with the namespace; and when the command ends or is killed, so is every process it
# left behind (the namespace's init exits, the kernel kills the rest: --kill-child covers a killed
# unshare too). Inside, the network has loopback and one veth pair, kvinject-node <-> kvinject-peer,
# both ends in the namespace (nothing reaches outside it), kvinject-node carrying the test node's
# address 192.0.2.10/24 (documentation range). KVINJECT_NETNS=1 tells the tests their network is
# private, KVINJECT_NAMESPACES="net mount pid" that all three are (a real node needs them).
#
# The command runs as a child of the namespace's init (sh), which reaps what containerd's shims
# orphan, and whose exit status is the command's.
set -euo pipefail
# shellcheck disable=SC2016  # $@ and $? belong to the inner shell
INNER='PATH="$PATH:/usr/sbin:/sbin"
ip link set lo up || exit 125
{ ip link add kvinject-node type veth peer name kvinject-peer &&
  ip address add 192.0.2.10/24 dev kvinject-node &&
  ip link set kvinject-peer up && ip link set kvinject-node up; } ||
    echo "isolated.sh: no veth pair with 192.0.2.10 here: the node tests cannot run" >&2
KVINJECT_NETNS=1 KVINJECT_NAMESPACES="net mount pid" "$@"
exit $?'
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null; then
    if unshare --net --mount --pid --fork --mount-proc true 2>/dev/null; then
        exec unshare --net --mount --propagation private --pid --fork --mount-proc --kill-child -- sh -c "$INNER" sh "$@"
    fi
    if unshare --net true 2>/dev/null; then
        echo "isolated.sh: no private mount and PID namespaces here; a private network namespace only" >&2
        exec unshare --net sh -c 'PATH="$PATH:/usr/sbin:/sbin"; ip link set lo up && KVINJECT_NETNS=1 exec "$@"' sh "$@"
    fi
fi
echo "isolated.sh: cannot create a private network namespace here; running without one" >&2
exec "$@"
