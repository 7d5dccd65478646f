"""Writing the files: every temp file first, then the renames; all or nothing, never readable by anyone else
before its group and mode are set."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path

from webhook.fetch.report import oserror_text

TEMP_PREFIX, TEMP_SUFFIX = ".kvinject-", ".tmp"  # aliases never start with '.', so temp names cannot collide


class WriteError(Exception):
    def __init__(self, alias: str, message: str) -> None:
        super().__init__(f"{alias}: {message}")
        self.alias = alias
        self.message = message


def file_mode(fs_group: int | None) -> int:
    """Owner and fsGroup may read (the app may run as another user); without fsGroup, everyone may read, since
    the emptyDir is only mounted into the pod's target containers."""
    return 0o440 if fs_group is not None else 0o444


def _set_group(fd: int, gid: int, chown: Callable[[int, int, int], None]) -> None:
    try:
        chown(fd, -1, gid)
    except PermissionError:
        # Not a member of the group: fine if the file already has it (fsGroup's setgid directory did it).
        if os.fstat(fd).st_gid != gid:
            raise


def _write_fully(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_temp(
    directory: Path, alias: str, data: bytes, fs_group: int | None, chown: Callable[[int, int, int], None]
) -> Path:
    temp = directory / f"{TEMP_PREFIX}{alias[:64]}.{secrets.token_hex(4)}{TEMP_SUFFIX}"  # within NAME_MAX
    fd = os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        # Group and mode before the first byte, so the content is never readable by anyone else.
        if fs_group is not None:
            _set_group(fd, fs_group, chown)
        os.fchmod(fd, file_mode(fs_group))
        _write_fully(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    os.close(fd)
    return temp


def remove_stale_temps(directory: Path) -> None:
    """Temp files of an earlier run that died mid-write."""
    for stale in directory.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            stale.unlink()


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_all(
    directory: Path,
    files: Sequence[tuple[str, bytes]],
    fs_group: int | None,
    chown: Callable[[int, int, int], None] = os.fchown,
) -> None:
    """Write (alias, content) pairs into `directory`: every temp file first, then the renames. On any error
    every temp file and every file renamed by this call is removed, and WriteError is raised."""
    temps: list[tuple[str, Path]] = []
    placed: list[Path] = []
    alias = ""
    try:
        for alias, data in files:
            temps.append((alias, _write_temp(directory, alias, data, fs_group, chown)))
        for alias, temp in temps:
            os.replace(temp, directory / alias)
            placed.append(directory / alias)
    except OSError as exc:
        for path in [t for _, t in temps] + placed:
            with contextlib.suppress(OSError):
                path.unlink()
        raise WriteError(alias, f"cannot write {directory / alias}: {oserror_text(exc)}") from None
    _fsync_dir(directory)
