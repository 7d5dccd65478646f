#!/usr/bin/env bash
# By-hand check of what tests/node/build.sh and tests/node/images.sh produced (not part of the test
# suite yet). Root needed. Leaves nothing behind: the containerd it starts has its own root, state
# and socket under a temporary directory, runs in a private mount namespace and is stopped (by its
# PID) on exit; the temporary directory is removed.
#
#   1. the node binaries start and print their version / --help; the Azure provider and our
#      registrar serve their sockets (provider healthz answers) and stop on SIGTERM;
#   2. pause, busybox, kvinject and kvinject-fetch tars import with `ctr -n k8s.io images import`;
#   3. through containerd + runc: the kvinject image prints `kvinject --help` and
#      `kvinject fetch --help` as uid 65532 with a read-only root filesystem; busybox runs; pause
#      runs and exits 0 on SIGTERM;
#   4. directly with `runc run` on the unpacked kvinject rootfs: the same, read-only, uid 65532.
#
# Usage: tests/node/verify.sh
set -euo pipefail

NODE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHON=${PYTHON:-python3}
((EUID == 0)) || { echo "verify.sh: needs root" >&2; exit 1; }

T0=$EPOCHSECONDS
log() { printf '[node-verify +%3ds] %s\n' "$((EPOCHSECONDS - T0))" "$*" >&2; }
fail() { printf '[node-verify] FAIL: %s\n' "$*" >&2; exit 1; }

eval "$("$NODE_DIR/build.sh" 2>/dev/null | grep -E '^[A-Z_]+=')"
eval "$("$NODE_DIR/images.sh" 2>/dev/null | grep -E '^[A-Z_]+=')"

WORK=$(mktemp -d /tmp/kvinject-node-verify.XXXXXX)
PIDS=()
CGROUP_PARENT=
cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
    done
    if [[ -n "$CGROUP_PARENT" ]]; then
        for p in /sys/fs/cgroup/*/"$CGROUP_PARENT"; do
            [[ -d "$p" ]] && rmdir "$p" 2>/dev/null || true
        done
    fi
    if findmnt -rn -o TARGET | grep -qF "$WORK"; then
        echo "[node-verify] WARNING: mounts left under $WORK; not removing it" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# ------------------------------------------------------------------ 1. binaries
log "binaries"
"$KUBELET" --version | grep -q 'Kubernetes v' || fail "kubelet --version"
"$KUBE_SCHEDULER" --version | grep -q 'Kubernetes v' || fail "kube-scheduler --version"
"$SSCSI_DRIVER" --version | grep -q '"BuildVersion":"v' || fail "secrets-store-csi-driver --version"
# Whole output first: `grep -q` closing the pipe early would fail the pipeline (pipefail).
help=$("$SSCSI_DRIVER" --help 2>&1 || true)
grep -q -- '-provider-volume' <<<"$help" || fail "secrets-store-csi-driver --help"
"$AZURE_PROVIDER" --version | grep -q '"version":"v' || fail "azure provider --version"
help=$("$AZURE_PROVIDER" --help 2>&1 || true)
grep -q -- '-endpoint' <<<"$help" || fail "azure provider --help"
"$REGISTRAR" -version | grep -q kvinject-registrar || fail "registrar -version"
"$PAUSE" -v | grep -q kvinject-pause || fail "pause -v"
log "  kubelet: $("$KUBELET" --version); driver: $("$SSCSI_DRIVER" --version); provider: $("$AZURE_PROVIDER" --version)"

"$AZURE_PROVIDER" --endpoint "unix://$WORK/azure.sock" --healthz-port 18989 --prometheus-port 18898 >"$WORK/provider.log" 2>&1 &
PIDS+=($!)
"$REGISTRAR" -socket "$WORK/plugins_registry/secrets-store.csi.k8s.io-reg.sock" \
    -endpoint "$WORK/plugins/csi-secrets-store/csi.sock" >"$WORK/registrar.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do
    [[ -S "$WORK/azure.sock" && -S "$WORK/plugins_registry/secrets-store.csi.k8s.io-reg.sock" ]] && break
    sleep 0.1
done
[[ -S "$WORK/azure.sock" ]] || { cat "$WORK/provider.log" >&2; fail "provider socket"; }
[[ -S "$WORK/plugins_registry/secrets-store.csi.k8s.io-reg.sock" ]] || { cat "$WORK/registrar.log" >&2; fail "registrar socket"; }
[[ "$(curl -s -m 5 http://127.0.0.1:18989/healthz)" == ok ]] || fail "provider healthz"
kill -TERM "${PIDS[@]}"
wait "${PIDS[@]}" || fail "provider/registrar did not exit 0 on SIGTERM"
PIDS=()
log "  provider served $WORK/azure.sock + healthz; registrar served its socket; both exited 0 on SIGTERM"

# ------------------------------------------------------------------ 2. containerd + ctr import
log "containerd with its own root/state/socket under $WORK/containerd"
C=$WORK/containerd
mkdir -p "$C/root" "$C/state"
cat >"$C/config.toml" <<EOF
version = 2
root = "$C/root"
state = "$C/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$C/containerd.sock"
[ttrpc]
  address = "$C/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$C/opt"
EOF
# Its shims put their sockets in /run/containerd/s (fixed in 1.6) and runc its state in
# /run/containerd/runc: a tmpfs over /run in its mount namespace keeps both off the host
# (`mount -n`: no /run/mount/utab on the host). exec keeps the PID: it is containerd's.
# shellcheck disable=SC2016  # $1 is sh's own argument
unshare --mount --propagation private -- \
    sh -c 'mount -n -t tmpfs -o mode=0755,size=64m kvinject-verify-run /run && exec containerd --config "$1"' \
    sh "$C/config.toml" >"$C/containerd.log" 2>&1 &
PIDS+=($!)
CTR=(ctr --address "$C/containerd.sock" -n k8s.io)
CGROUP_PARENT=kvinject-verify-$$  # containers' cgroups go under it, removed on exit
for _ in $(seq 100); do "${CTR[@]}" version >/dev/null 2>&1 && break; sleep 0.1; done
"${CTR[@]}" version >/dev/null 2>&1 || { tail -20 "$C/containerd.log" >&2; fail "containerd did not come up"; }

for tar in "$PAUSE_IMAGE_TAR" "$BUSYBOX_IMAGE_TAR" "$KVINJECT_IMAGE_TAR" "$FETCH_IMAGE_TAR"; do
    t=$EPOCHSECONDS
    "${CTR[@]}" images import "$tar" >&2 || fail "ctr images import $tar"
    log "  imported $(basename "$tar") in $((EPOCHSECONDS - t))s"
done
"${CTR[@]}" images ls >&2

# ------------------------------------------------------------------ 3. run through containerd
run_ctr() {  # NAME IMAGE ARGS... -> runs with --rm --read-only, output in $WORK/NAME.out
    local name=$1 image=$2
    shift 2
    "${CTR[@]}" run --rm --read-only --fifo-dir "$WORK/fifo" --cgroup "/$CGROUP_PARENT/$name" \
        "$image" "$name" "$@" >"$WORK/$name.out" 2>&1
}
run_ctr kv-id "$KVINJECT_IMAGE" /usr/bin/id || { cat "$WORK/kv-id.out" >&2; fail "kvinject image: id"; }
grep -q 'uid=65532 gid=65532' "$WORK/kv-id.out" || fail "kvinject image runs as $(cat "$WORK/kv-id.out")"
run_ctr kv-help "$KVINJECT_IMAGE" /opt/kvinject/bin/kvinject --help || { cat "$WORK/kv-help.out" >&2; fail "kvinject --help"; }
grep -q 'usage: kvinject' "$WORK/kv-help.out" || fail "kvinject --help printed: $(cat "$WORK/kv-help.out")"
run_ctr kv-fetch "$KVINJECT_IMAGE" kvinject fetch --help || { cat "$WORK/kv-fetch.out" >&2; fail "kvinject fetch --help"; }
grep -q 'usage: kvinject fetch' "$WORK/kv-fetch.out" || fail "kvinject fetch --help printed: $(cat "$WORK/kv-fetch.out")"
run_ctr kv-rofs "$KVINJECT_IMAGE" /bin/sh -c 'touch /opt/kvinject/x 2>&1; echo rc=$?' || true
grep -q 'Read-only file system' "$WORK/kv-rofs.out" || fail "root filesystem is writable: $(cat "$WORK/kv-rofs.out")"
log "  kvinject image via containerd/runc: uid 65532, read-only rootfs, 'kvinject --help' and 'kvinject fetch --help' print usage"
run_ctr kvf-fetch "$FETCH_IMAGE" kvinject fetch --help || { cat "$WORK/kvf-fetch.out" >&2; fail "kvinject-fetch: fetch --help"; }
grep -q 'usage: kvinject fetch' "$WORK/kvf-fetch.out" || fail "kvinject-fetch: fetch --help printed: $(cat "$WORK/kvf-fetch.out")"
run_ctr kvf-serve "$FETCH_IMAGE" kvinject serve && fail "kvinject-fetch image ran kvinject serve"
grep -q 'has only `kvinject fetch`' "$WORK/kvf-serve.out" || fail "kvinject-fetch: serve printed: $(cat "$WORK/kvf-serve.out")"
log "  kvinject-fetch image: 'kvinject fetch --help' prints usage; 'kvinject serve' says it is not there"

# shellcheck disable=SC2016  # expanded inside the container
run_ctr bb "$BUSYBOX_IMAGE" sh -c 'echo busybox-ok $(id -u) $(ls /bin | wc -l)' || { cat "$WORK/bb.out" >&2; fail "busybox image"; }
grep -q busybox-ok "$WORK/bb.out" || fail "busybox image printed: $(cat "$WORK/bb.out")"
log "  busybox image: $(cat "$WORK/bb.out")"

"${CTR[@]}" run -d --read-only --fifo-dir "$WORK/fifo" --cgroup "/$CGROUP_PARENT/pause-check" \
    "$PAUSE_IMAGE" pause-check >/dev/null || fail "pause image: start"
sleep 0.5
"${CTR[@]}" task ls | grep -q 'pause-check.*RUNNING' || fail "pause is not running"
"${CTR[@]}" task kill -s SIGTERM pause-check
for _ in $(seq 50); do "${CTR[@]}" task ls | grep -q 'pause-check.*STOPPED' && break; sleep 0.1; done
"${CTR[@]}" task ls | grep -q 'pause-check.*STOPPED' || fail "pause did not stop on SIGTERM"
"${CTR[@]}" task delete pause-check >/dev/null 2>&1 || true
"${CTR[@]}" container delete pause-check
log "  pause image: runs as PID 1, stops on SIGTERM"

kill -TERM "${PIDS[@]}"
wait "${PIDS[@]}" || true
PIDS=()
log "containerd stopped"

# ------------------------------------------------------------------ 4. runc on the unpacked rootfs
log "runc run on the unpacked kvinject image"
B=$WORK/bundle
mkdir -p "$B"
"$PYTHON" "$NODE_DIR/oci.py" unpack "$KVINJECT_IMAGE_TAR" "$B/rootfs"
(cd "$B" && runc spec)
for args in '["/opt/kvinject/bin/kvinject","--help"]' '["/opt/kvinject/bin/kvinject","fetch","--help"]'; do
    "$PYTHON" - "$B/config.json" "$args" <<'EOF'
import json, sys
path, args = sys.argv[1], json.loads(sys.argv[2])
c = json.load(open(path))
c["root"]["readonly"] = True
p = c["process"]
p["terminal"] = False
p["user"] = {"uid": 65532, "gid": 65532}
p["args"] = args
p["env"] = ["PATH=/opt/kvinject/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"]
json.dump(c, open(path, "w"))
EOF
    out=$(cd "$B" && runc --root "$WORK/runc-state" run "kvinject-verify-$$" 2>&1) || fail "runc run $args: $out"
    grep -q 'usage: kvinject' <<<"$out" || fail "runc run $args printed: $out"
done
log "  runc: 'kvinject --help' and 'kvinject fetch --help' as 65532 with root.readonly=true"
log "all checks passed"
