#!/usr/bin/env python3
"""Write and read docker-archive image tars without a registry or a daemon (the node tests' images).

A docker-archive is what `docker save` writes and what `ctr images import`, `buildah pull
docker-archive:` and `podman load` read: a tar holding `manifest.json` (one entry: the config file's
name, the image's RepoTags, the layer tars' names), the image config (JSON, with the layers'
uncompressed sha256 digests as `rootfs.diff_ids`) and the layer tars.

    oci.py write --out OUT.tar --ref NAME:TAG [--entrypoint JSON] [--cmd JSON] [--env K=V]...
                 [--user U] [--workdir D] [--label K=V]...
                 [--file SRC=DEST[:MODE]]... [--symlink DEST=TARGET]... [--dir DEST[:MODE]]...
                 [--rootfs DIR]
        One layer from the given files, symlinks and directories (owned by root, mtime 0, in a
        fixed order: the same inputs give the same bytes), or from a whole directory tree
        (--rootfs: owners, modes and mtimes kept, hard links kept, sockets and device nodes left
        out). Parent directories are added as needed (0755).
    oci.py inspect ARCHIVE
        Prints {"ref", "id", "config", "layers", "size"} of an archive as JSON.
    oci.py unpack ARCHIVE DIR
        Extracts the layers in order into DIR (whiteouts applied), e.g. a rootfs for `runc run`.

Standard library only; used by tests/node/images.sh.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

EPOCH = "1970-01-01T00:00:00Z"
HAS_FILTERS = hasattr(tarfile, "fully_trusted_filter")  # Python >= 3.11.4 warns without filter=


@dataclass
class Entry:
    """One member of a synthetic layer."""

    path: str  # relative, no leading slash
    kind: str  # "dir" | "file" | "symlink"
    mode: int = 0o755
    source: Path | None = None
    target: str = ""


@dataclass
class Spec:
    entries: dict[str, Entry] = field(default_factory=dict)

    def add(self, e: Entry) -> None:
        parts = PurePosixPath(e.path).parts
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            existing = self.entries.get(parent)
            if existing is None:
                self.entries[parent] = Entry(parent, "dir", 0o755)
            elif existing.kind != "dir":
                raise SystemExit(f"oci.py: {parent} is a {existing.kind}, cannot hold {e.path}")
        if e.path in self.entries and self.entries[e.path].kind == "dir" and e.kind == "dir":
            self.entries[e.path].mode = e.mode  # an explicit --dir wins over an implied parent
            return
        if e.path in self.entries:
            raise SystemExit(f"oci.py: {e.path} given twice")
        self.entries[e.path] = e


def rel(dest: str) -> str:
    p = PurePosixPath(dest.strip().lstrip("/"))
    if ".." in p.parts:
        raise SystemExit(f"oci.py: '..' in {dest!r}")
    r = "" if str(p) == "." else str(p)
    if not r:
        raise SystemExit(f"oci.py: empty destination {dest!r}")
    return r


def split_mode(value: str, default: int) -> tuple[str, int]:
    """'path:0755' -> ('path', 0o755); 'path' -> ('path', default)."""
    head, sep, tail = value.rpartition(":")
    if sep and tail and all(c in "01234567" for c in tail):
        return head, int(tail, 8)
    return value, default


def synthetic_layer(spec: Spec, out: io.RawIOBase) -> None:
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(spec.entries):
            e = spec.entries[path]
            ti = tarfile.TarInfo(e.path)
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = ""
            ti.mtime = 0
            ti.mode = e.mode
            if e.kind == "dir":
                ti.type = tarfile.DIRTYPE
                tar.addfile(ti)
            elif e.kind == "symlink":
                ti.type = tarfile.SYMTYPE
                ti.linkname = e.target
                ti.mode = 0o777
                tar.addfile(ti)
            else:
                assert e.source is not None
                ti.type = tarfile.REGTYPE
                ti.size = e.source.stat().st_size
                with e.source.open("rb") as f:
                    tar.addfile(ti, f)


def walk_sorted(root: Path) -> Iterator[Path]:
    """Every path under root (not root itself), parents before children, names sorted."""
    stack = [root]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            names = sorted(it, key=lambda e: e.name)
        subdirs = []
        for de in names:
            p = Path(de.path)
            yield p
            if de.is_dir(follow_symlinks=False):
                subdirs.append(p)
        stack.extend(reversed(subdirs))


def rootfs_layer(root: Path, out: io.RawIOBase) -> None:
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for p in walk_sorted(root):
            st = p.lstat()
            if stat.S_ISSOCK(st.st_mode) or stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                continue  # the runtime provides /dev; sockets cannot be archived
            ti = tar.gettarinfo(str(p), arcname=str(p.relative_to(root)))
            if ti is None:
                continue
            ti.uname = ti.gname = ""
            if ti.isreg():
                with p.open("rb") as f:
                    tar.addfile(ti, f)
            else:
                tar.addfile(ti)


class HashingWriter(io.RawIOBase):
    def __init__(self, f: io.BufferedIOBase) -> None:
        self.f = f
        self.h = hashlib.sha256()
        self.n = 0

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        self.f.write(b)
        self.h.update(b)
        self.n += len(b)
        return len(b)


def kv_list(values: list[str], what: str) -> list[tuple[str, str]]:
    out = []
    for v in values:
        k, sep, val = v.partition("=")
        if not sep or not k:
            raise SystemExit(f"oci.py: {what} {v!r} is not KEY=VALUE")
        out.append((k, val))
    return out


def cmd_write(a: argparse.Namespace) -> None:
    out = Path(a.out)
    synthetic = a.file or a.symlink or a.dir
    if bool(a.rootfs) == bool(synthetic):
        raise SystemExit("oci.py write: give either --rootfs or --file/--symlink/--dir")
    spec = Spec()
    for d in a.dir or []:
        p, mode = split_mode(d, 0o755)
        spec.add(Entry(rel(p), "dir", mode))
    for f in a.file or []:
        src, sep, dest = f.partition("=")
        if not sep:
            raise SystemExit(f"oci.py: --file {f!r} is not SRC=DEST[:MODE]")
        dest, mode = split_mode(dest, -1)
        source = Path(src)
        if not source.is_file():
            raise SystemExit(f"oci.py: --file source {src} is not a file")
        if mode < 0:
            mode = stat.S_IMODE(source.stat().st_mode)
        spec.add(Entry(rel(dest), "file", mode, source=source))
    for s in a.symlink or []:
        dest, sep, target = s.partition("=")
        if not sep or not target:
            raise SystemExit(f"oci.py: --symlink {s!r} is not DEST=TARGET")
        spec.add(Entry(rel(dest), "symlink", target=target))

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".oci-") as tmp:
        layer_tmp = Path(tmp) / "layer.tar"
        with layer_tmp.open("wb") as lf:
            hw = HashingWriter(lf)  # a stream ("w|"): the digest is taken while writing
            if a.rootfs:
                rootfs_layer(Path(a.rootfs), hw)
            else:
                synthetic_layer(spec, hw)
        diff_id = hw.h.hexdigest()

        cfg: dict[str, object] = {}
        if a.entrypoint:
            cfg["Entrypoint"] = json.loads(a.entrypoint)
        if a.cmd:
            cfg["Cmd"] = json.loads(a.cmd)
        env = kv_list(a.env or [], "--env")
        if env:
            cfg["Env"] = [f"{k}={v}" for k, v in env]
        if a.user:
            cfg["User"] = a.user
        cfg["WorkingDir"] = a.workdir or "/"
        labels = kv_list(a.label or [], "--label")
        if labels:
            cfg["Labels"] = dict(labels)
        config = {
            "architecture": a.arch,
            "os": "linux",
            "created": EPOCH,
            "config": cfg,
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
            "history": [{"created": EPOCH, "created_by": "tests/node/oci.py"}],
        }
        config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
        config_id = hashlib.sha256(config_bytes).hexdigest()
        manifest = [{"Config": f"{config_id}.json", "RepoTags": [a.ref], "Layers": [f"{diff_id}/layer.tar"]}]
        manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()

        partial = out.with_name(out.name + ".partial")
        with tarfile.open(partial, mode="w", format=tarfile.PAX_FORMAT) as tar:

            def add_bytes(name: str, data: bytes) -> None:
                ti = tarfile.TarInfo(name)
                ti.size, ti.mode, ti.mtime = len(data), 0o644, 0
                tar.addfile(ti, io.BytesIO(data))

            ti = tarfile.TarInfo(diff_id)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(ti)
            ti = tarfile.TarInfo(f"{diff_id}/layer.tar")
            ti.size, ti.mode, ti.mtime = hw.n, 0o644, 0
            with layer_tmp.open("rb") as layer_in:
                tar.addfile(ti, layer_in)
            add_bytes(f"{config_id}.json", config_bytes)
            add_bytes("manifest.json", manifest_bytes)
        os.replace(partial, out)
    result = {"ref": a.ref, "id": f"sha256:{config_id}", "layer": f"sha256:{diff_id}", "size": out.stat().st_size}
    print(json.dumps(result))


def read_index(tar: tarfile.TarFile, path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The archive's one manifest.json entry and its image config."""
    mf = tar.extractfile("manifest.json")
    if mf is None:
        raise SystemExit(f"oci.py: {path} has no manifest.json (not a docker-archive)")
    manifest = json.load(mf)
    if len(manifest) != 1:
        raise SystemExit(f"oci.py: {path} holds {len(manifest)} images, expected 1")
    entry: dict[str, Any] = manifest[0]
    cf = tar.extractfile(entry["Config"])
    if cf is None:
        raise SystemExit(f"oci.py: {path} lacks its config {entry['Config']}")
    config: dict[str, Any] = json.load(cf)
    return entry, config


def cmd_inspect(a: argparse.Namespace) -> None:
    path = Path(a.archive)
    with tarfile.open(path) as tar:
        entry, config = read_index(tar, path)
    ref = (entry.get("RepoTags") or [None])[0]
    cid = str(entry["Config"]).removeprefix("blobs/sha256/").removesuffix(".json")
    info = {"ref": ref, "id": f"sha256:{cid}", "config": config.get("config", {}), "layers": len(entry["Layers"])}
    info["size"] = path.stat().st_size
    print(json.dumps(info))


def cmd_unpack(a: argparse.Namespace) -> None:
    dest = Path(a.dir)
    dest.mkdir(parents=True, exist_ok=True)
    path = Path(a.archive)
    with tarfile.open(path) as tar:
        entry, _config = read_index(tar, path)
        for layer_name in entry["Layers"]:
            lf = tar.extractfile(layer_name)
            assert lf is not None
            with tarfile.open(fileobj=lf, mode="r|*") as layer:
                for m in layer:
                    name = PurePosixPath(m.name)
                    if name.is_absolute() or ".." in name.parts:
                        raise SystemExit(f"oci.py: unsafe member {m.name!r} in {layer_name}")
                    base = name.name
                    if base == ".wh..wh..opq":  # opaque directory: drop what lower layers put there
                        d = dest / name.parent
                        if d.is_dir():
                            for child in d.iterdir():
                                remove(child)
                        continue
                    if base.startswith(".wh."):
                        remove(dest / name.parent / base[len(".wh.") :])
                        continue
                    target = dest / name
                    if target.is_symlink() or (target.exists() and not (m.isdir() and target.is_dir())):
                        remove(target)
                    if HAS_FILTERS:  # the members were checked above; keep owners, modes, links
                        layer.extract(m, dest, set_attrs=True, numeric_owner=True, filter="fully_trusted")
                    else:
                        layer.extract(m, dest, set_attrs=True, numeric_owner=True)


def remove(p: Path) -> None:
    if p.is_symlink() or not p.is_dir():
        p.unlink(missing_ok=True)
    else:
        shutil.rmtree(p)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="oci.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="write a one-layer docker-archive")
    w.add_argument("--out", required=True)
    w.add_argument("--ref", required=True, help="RepoTag, e.g. kvinject.local/pause:abc")
    w.add_argument("--arch", default="amd64")
    w.add_argument("--entrypoint", help="JSON list")
    w.add_argument("--cmd", help="JSON list")
    w.add_argument("--env", action="append")
    w.add_argument("--user")
    w.add_argument("--workdir")
    w.add_argument("--label", action="append")
    w.add_argument("--file", action="append", help="SRC=DEST[:MODE]")
    w.add_argument("--symlink", action="append", help="DEST=TARGET")
    w.add_argument("--dir", action="append", help="DEST[:MODE]")
    w.add_argument("--rootfs", help="a directory tree as the one layer")
    w.set_defaults(fn=cmd_write)
    i = sub.add_parser("inspect", help="print an archive's ref, id and config")
    i.add_argument("archive")
    i.set_defaults(fn=cmd_inspect)
    u = sub.add_parser("unpack", help="extract an archive's layers into a directory")
    u.add_argument("archive")
    u.add_argument("dir")
    u.set_defaults(fn=cmd_unpack)
    a = ap.parse_args(argv)
    a.fn(a)


if __name__ == "__main__":
    main()
