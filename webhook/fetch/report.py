"""What the init container tells: a reason per failed object, stderr lines, and the termination log that
`kubectl describe pod` shows (whole lines within the kubelet's 4 KiB)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from webhook.providers.reading import Access, FailureKind, ObjectSpec, ReadError, WordsFailures

TERMINATION_LOG_LIMIT = 4096  # the kubelet keeps at most this many bytes


def tried_text(attempts: int, out_of_time: bool = False) -> str:
    return f" after {attempts} attempt{'s' if attempts != 1 else ''}" + (" (time budget spent)" if out_of_time else "")


def reason_for(obj: ObjectSpec, error: ReadError, attempts: int, access: Access, out_of_time: bool = False) -> str:
    """The reason for a failed object in its store's words: the access's own, else Key Vault's."""
    if isinstance(access, WordsFailures):
        return access.failure_reason(obj, error, tried_text(attempts, out_of_time))
    return failure_reason(obj, error, attempts, access.principal, out_of_time)


def failure_reason(obj: ObjectSpec, error: ReadError, attempts: int, principal: str, out_of_time: bool = False) -> str:
    """The human reason for a failed Key Vault object (the part after `alias (vault/name): `)."""
    tried = tried_text(attempts, out_of_time)
    match error.kind:
        case FailureKind.DENIED:
            return f"identity {principal} may not read {obj.vault}/{obj.name} (Key Vault: {error.detail})"
        case FailureKind.NOT_FOUND:
            return f"object not found in vault {obj.vault}"
        case FailureKind.TOKEN:
            return f"token exchange failed: {error.detail}"
        case FailureKind.TOKEN_UNREACHABLE:
            return f"token exchange failed: Microsoft Entra ID unreachable: {error.detail}{tried}"
        case FailureKind.UNREACHABLE:
            return f"vault {obj.vault} unreachable: {error.detail}{tried}"
        case FailureKind.UNAVAILABLE:
            return f"vault {obj.vault} unavailable: {error.detail}{tried}"
        case FailureKind.TLS:
            return f"vault {obj.vault} unreachable: {error.detail}"
        case FailureKind.REJECTED:
            return f"Key Vault refused the read: {error.detail}"
        case FailureKind.INVALID:
            return f"cannot use the object: {error.detail}"


def oserror_text(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _cut_utf8(data: bytes, limit: int) -> bytes:
    return data[:limit].decode("utf-8", "ignore").encode("utf-8")


def termination_message(lines: Sequence[str], limit: int = TERMINATION_LOG_LIMIT) -> bytes:
    """Whole lines that fit in `limit` bytes, then a count of the lines left out."""
    encoded = [line.encode("utf-8") for line in lines]
    if sum(len(e) + 1 for e in encoded) <= limit:
        return b"".join(e + b"\n" for e in encoded)
    reserve = len(f"... and {len(encoded)} more\n")  # the longest trailer this can need
    out = b""
    for index, line in enumerate(encoded):
        if len(out) + len(line) + 1 + reserve > limit:
            if out:
                return out + f"... and {len(encoded) - index} more\n".encode()
            # Even the first line is too long: keep its start.
            return _cut_utf8(line, limit - reserve - 1) + f"\n... and {len(encoded) - 1} more\n".encode()
        out += line + b"\n"
    return out


def write_termination_log(path: Path, lines: Sequence[str], stderr: TextIO) -> None:
    try:
        path.write_bytes(termination_message(lines))
    except OSError as exc:
        log(stderr, f"cannot write the termination log {path}: {oserror_text(exc)}")


def log(stderr: TextIO, message: str) -> None:
    stderr.write(f"kvinject fetch: {message}\n")
    stderr.flush()


def fail(termination_log: Path, lines: list[str], stderr: TextIO, code: int) -> int:
    write_termination_log(termination_log, lines, stderr)
    return code
