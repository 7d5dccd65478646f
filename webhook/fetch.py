"""`kvinject fetch`: the init container that writes Key Vault objects into the pod's in-memory volume.

Everything the init container needs comes from its environment (set by the webhook). Every object is read into
memory first, one thread per vault; only when all reads succeeded is anything written, each file atomically. On
failure the reasons go to the termination log (`kubectl describe pod` shows it) and nothing is left on disk.

This module never imports `azure.*`: it talks to Key Vault through the `Reader` seam, whose real implementation
(webhook.azure.KeyVaultReader) turns the SDK's errors into `ReadError`s. Values are held as bytes and never
formatted into any message, log line or exception.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import enum
import functools
import json
import math
import os
import random
import re
import secrets
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO
from urllib.parse import urlsplit

# The contract with the webhook (environment variables).
ENV_OBJECTS = "KVINJECT_OBJECTS"
ENV_OUTPUT_DIR = "KVINJECT_OUTPUT_DIR"
ENV_FS_GROUP = "KVINJECT_FS_GROUP"
ENV_VAULT_DNS_SUFFIX = "KVINJECT_VAULT_DNS_SUFFIX"
ENV_VAULT_URLS = "KVINJECT_VAULT_URLS"
ENV_TERMINATION_LOG = "KVINJECT_TERMINATION_LOG"
ENV_TIMEOUT = "KVINJECT_FETCH_TIMEOUT_SECONDS"
ENV_RETRIES = "KVINJECT_FETCH_RETRIES"
ENV_CLIENT_ID = "AZURE_CLIENT_ID"
ENV_TENANT_ID = "AZURE_TENANT_ID"
ENV_TOKEN_FILE = "AZURE_FEDERATED_TOKEN_FILE"
ENV_AUTHORITY = "AZURE_AUTHORITY_HOST"

DEFAULT_VAULT_DNS_SUFFIX = "vault.azure.net"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
DEFAULT_AUTHORITY = "https://login.microsoftonline.com/"
DEFAULT_TIMEOUT = 60.0
DEFAULT_RETRIES = 4
MAX_RETRIES = 20

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2

TERMINATION_LOG_LIMIT = 4096  # the kubelet keeps at most this many bytes
BACKOFF_BASE = 0.5  # seconds before the first retry (before jitter)
BACKOFF_CAP = 8.0
RETRY_AFTER_CAP = 10.0  # a server's Retry-After is honoured up to this
ATTEMPT_TIMEOUT_CAP = 15.0  # one HTTP attempt never gets more than this
MIN_ATTEMPT_SECONDS = 0.5  # no attempt is started with less budget left than this
HARD_STOP_GRACE = 5.0  # a vault thread still busy this long after the budget is abandoned

TEMP_PREFIX, TEMP_SUFFIX = ".kvinject-", ".tmp"  # aliases never start with '.', so temp names cannot collide

_VAULT_RE = re.compile(r"^[a-zA-Z0-9-]{3,24}$")
_NAME_RE = re.compile(r"^[a-zA-Z0-9-]{1,127}$")
_VERSION_RE = re.compile(r"^[a-zA-Z0-9]{0,32}$")
_DNS_SUFFIX_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$")
_ALIAS_MAX_BYTES = 255


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


class ObjectType(enum.StrEnum):
    SECRET = "secret"
    CERT = "cert"  # read through the certificate's backing secret


@dataclass(frozen=True)
class ObjectSpec:
    """One object to fetch: `alias` is the output file name."""

    alias: str
    vault: str
    name: str
    type: ObjectType = ObjectType.SECRET
    version: str = ""

    @property
    def label(self) -> str:
        ref = f"{self.vault}/{self.name}" + (f"@{self.version}" if self.version else "")
        return f"{self.alias} ({ref})"


@dataclass(frozen=True)
class Identity:
    """The workload identity to authenticate as (the standard AZURE_* variables)."""

    client_id: str
    tenant_id: str
    token_file: Path
    authority: str


@dataclass(frozen=True)
class FetchConfig:
    objects: tuple[ObjectSpec, ...]
    output_dir: Path
    identity: Identity
    fs_group: int | None = None
    vault_dns_suffix: str = DEFAULT_VAULT_DNS_SUFFIX
    vault_url_overrides: Mapping[str, str] = field(default_factory=dict)
    termination_log: Path = Path(DEFAULT_TERMINATION_LOG)
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES

    def vault_url(self, vault: str) -> str:
        return self.vault_url_overrides.get(vault) or f"https://{vault}.{self.vault_dns_suffix}"

    def is_overridden(self, vault: str) -> bool:
        """True when the vault is not addressed by its public DNS name (tests, private endpoints)."""
        return vault in self.vault_url_overrides

    def by_vault(self) -> dict[str, list[ObjectSpec]]:
        grouped: dict[str, list[ObjectSpec]] = {}
        for obj in self.objects:
            grouped.setdefault(obj.vault, []).append(obj)
        return grouped


class ConfigError(Exception):
    """The environment is unusable (exit 2); every problem is listed."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _alias_problem(alias: str) -> str | None:
    if not alias:
        return "alias is empty"
    if "/" in alias or alias.startswith(".") or "\0" in alias:
        return f"alias {alias!r} is not a safe file name (no '/', no leading '.')"
    if len(alias.encode()) > _ALIAS_MAX_BYTES:
        return f"alias {alias[:32]!r}... is longer than {_ALIAS_MAX_BYTES} bytes"
    return None


def _str_field(item: Mapping[str, Any], key: str, where: str, problems: list[str], required: bool = True) -> str:
    value = item.get(key, None if required else "")
    if not isinstance(value, str):
        problems.append(f"{where}: {key!r} must be a string")
        return ""
    return value


def _parse_object(item: Any, where: str) -> tuple[ObjectSpec | None, list[str]]:
    if not isinstance(item, dict):
        return None, [f"{where}: must be a JSON object"]
    problems: list[str] = []
    alias = _str_field(item, "alias", where, problems)
    vault = _str_field(item, "vault", where, problems)
    name = _str_field(item, "name", where, problems)
    kind = _str_field(item, "type", where, problems, required=False) or ObjectType.SECRET.value
    version = _str_field(item, "version", where, problems, required=False)
    if problems:
        return None, problems
    alias_problem = _alias_problem(alias)
    if alias_problem:
        problems.append(f"{where}: {alias_problem}")
    if not _VAULT_RE.match(vault):
        problems.append(f"{where}: vault {vault!r} must be 3-24 letters, digits or '-'")
    if not _NAME_RE.match(name):
        problems.append(f"{where}: name {name!r} must be 1-127 letters, digits or '-'")
    if kind not in {t.value for t in ObjectType}:
        problems.append(f"{where}: type {kind!r} is not supported (secret or cert)")
    if not _VERSION_RE.match(version):
        problems.append(f"{where}: version {version!r} must be up to 32 letters or digits")
    if problems:
        return None, problems
    return ObjectSpec(alias, vault, name, ObjectType(kind), version), []


def _parse_objects(raw: str | None) -> tuple[tuple[ObjectSpec, ...], list[str]]:
    if not raw:
        return (), [f"{ENV_OBJECTS} is not set"]
    try:
        items = json.loads(raw)
    except ValueError as exc:
        return (), [f"{ENV_OBJECTS} is not valid JSON ({exc})"]
    if not isinstance(items, list) or not items:
        return (), [f"{ENV_OBJECTS} must be a non-empty JSON list of objects"]
    objects: list[ObjectSpec] = []
    problems: list[str] = []
    for index, item in enumerate(items):
        obj, item_problems = _parse_object(item, f"{ENV_OBJECTS}[{index}]")
        problems.extend(item_problems)
        if obj is not None:
            objects.append(obj)
    seen: set[str] = set()
    for obj in objects:
        if obj.alias in seen:
            problems.append(f"{ENV_OBJECTS}: alias {obj.alias!r} is used twice")
        seen.add(obj.alias)
    return tuple(objects), problems


def _parse_vault_urls(raw: str | None) -> tuple[dict[str, str], list[str]]:
    if not raw:
        return {}, []
    try:
        urls = json.loads(raw)
    except ValueError as exc:
        return {}, [f"{ENV_VAULT_URLS} is not valid JSON ({exc})"]
    if not isinstance(urls, dict):
        return {}, [f"{ENV_VAULT_URLS} must be a JSON object of vault name -> https URL"]
    problems = []
    for vault, url in urls.items():
        if not isinstance(url, str) or urlsplit(url).scheme != "https" or not urlsplit(url).netloc:
            problems.append(f"{ENV_VAULT_URLS}: the URL for {vault!r} must be an https URL")
    return ({k: v.rstrip("/") for k, v in urls.items()} if not problems else {}), problems


def _parse_number(env: Mapping[str, str], key: str, default: float, low: float, high: float) -> tuple[float, list[str]]:
    raw = env.get(key, "").strip()
    if not raw:
        return default, []
    try:
        value = float(raw)
    except ValueError:
        return default, [f"{key} must be a number, not {raw!r}"]
    if not math.isfinite(value) or not low <= value <= high:
        return default, [f"{key} must be between {low:g} and {high:g}, not {raw!r}"]
    return value, []


def _parse_int(env: Mapping[str, str], key: str, low: int, high: int) -> tuple[int | None, list[str]]:
    raw = env.get(key, "").strip()
    if not raw:
        return None, []
    if not re.fullmatch(r"\d+", raw) or not low <= int(raw) <= high:
        return None, [f"{key} must be an integer between {low} and {high}, not {raw!r}"]
    return int(raw), []


def _parse_identity(env: Mapping[str, str]) -> tuple[Identity | None, list[str]]:
    problems = [f"{key} is not set" for key in (ENV_CLIENT_ID, ENV_TENANT_ID, ENV_TOKEN_FILE) if not env.get(key)]
    authority = env.get(ENV_AUTHORITY) or DEFAULT_AUTHORITY
    if urlsplit(authority).scheme != "https" or not urlsplit(authority).netloc:
        problems.append(f"{ENV_AUTHORITY} must be an https URL, not {authority!r}")
    token_file = Path(env.get(ENV_TOKEN_FILE, ""))
    if env.get(ENV_TOKEN_FILE) and not token_file.is_file():
        problems.append(f"{ENV_TOKEN_FILE} {token_file} does not exist (is the projected token volume mounted?)")
    if problems:
        return None, problems
    return Identity(env[ENV_CLIENT_ID], env[ENV_TENANT_ID], token_file, authority), []


def _parse_output_dir(env: Mapping[str, str]) -> tuple[Path, list[str]]:
    raw = env.get(ENV_OUTPUT_DIR, "")
    if not raw:
        return Path(), [f"{ENV_OUTPUT_DIR} is not set"]
    if not Path(raw).is_dir():
        return Path(raw), [f"{ENV_OUTPUT_DIR} {raw} is not a directory (is the volume mounted?)"]
    return Path(raw), []


def load_config(env: Mapping[str, str]) -> FetchConfig:
    """The fetch configuration from the environment; raises ConfigError listing every problem."""
    objects, problems = _parse_objects(env.get(ENV_OBJECTS))
    output_dir, more = _parse_output_dir(env)
    problems += more
    identity, more = _parse_identity(env)
    problems += more
    fs_group, more = _parse_int(env, ENV_FS_GROUP, 0, 2**32 - 2)
    problems += more
    retries, more = _parse_int(env, ENV_RETRIES, 0, MAX_RETRIES)
    problems += more
    timeout, more = _parse_number(env, ENV_TIMEOUT, DEFAULT_TIMEOUT, 1, 3600)
    problems += more
    overrides, more = _parse_vault_urls(env.get(ENV_VAULT_URLS))
    problems += more
    suffix = (env.get(ENV_VAULT_DNS_SUFFIX) or DEFAULT_VAULT_DNS_SUFFIX).strip(".").lower()
    if not _DNS_SUFFIX_RE.match(suffix):
        problems.append(f"{ENV_VAULT_DNS_SUFFIX} {suffix!r} is not a DNS suffix")
    if problems or identity is None:
        raise ConfigError(problems)
    return FetchConfig(
        objects=objects,
        output_dir=output_dir,
        identity=identity,
        fs_group=fs_group,
        vault_dns_suffix=suffix,
        vault_url_overrides=overrides,
        termination_log=termination_log_path(env),
        timeout=timeout,
        retries=DEFAULT_RETRIES if retries is None else retries,
    )


def termination_log_path(env: Mapping[str, str]) -> Path:
    return Path(env.get(ENV_TERMINATION_LOG) or DEFAULT_TERMINATION_LOG)


# --------------------------------------------------------------------------------------
# The reader seam and its errors
# --------------------------------------------------------------------------------------


class FailureKind(enum.Enum):
    DENIED = "denied"  # Key Vault 403
    NOT_FOUND = "not found"  # Key Vault 404
    TOKEN = "token"  # Entra refused the exchange (or the credential could not try)
    TOKEN_UNREACHABLE = "token unreachable"  # Entra unreachable, or answering 429 or 5xx
    UNREACHABLE = "unreachable"  # no connection to the vault, or no answer in time
    UNAVAILABLE = "unavailable"  # the vault answered 429 or 5xx
    TLS = "tls"  # certificate verification failed: retrying cannot help
    REJECTED = "rejected"  # any other refusal by Key Vault (400, 401, ...)
    INVALID = "invalid"  # the object was read but cannot be written as asked


class ReadError(Exception):
    """One failed read attempt. `detail` is safe to show: names, codes and service messages, never a value."""

    def __init__(
        self, kind: FailureKind, detail: str, *, transient: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(f"{kind.value}: {detail}")
        self.kind = kind
        self.detail = detail
        self.transient = transient
        self.retry_after = retry_after


class Reader(Protocol):
    """Reads one object's file content with a single attempt bounded by `timeout` seconds; raises ReadError."""

    def read(self, obj: ObjectSpec, timeout: float) -> bytes: ...

    def close(self) -> None: ...


ReaderFactory = Callable[[FetchConfig], Reader]

# A failure of one of these kinds applies to every object of the vault: the rest are not tried.
_VAULT_WIDE = frozenset({FailureKind.TOKEN, FailureKind.TOKEN_UNREACHABLE, FailureKind.UNREACHABLE, FailureKind.TLS})


def failure_reason(obj: ObjectSpec, error: ReadError, attempts: int, client_id: str, out_of_time: bool = False) -> str:
    """The human reason for a failed object (the part after `alias (vault/name): `)."""
    tried = f" after {attempts} attempt{'s' if attempts != 1 else ''}" + (" (time budget spent)" if out_of_time else "")
    match error.kind:
        case FailureKind.DENIED:
            return f"identity {client_id} may not read {obj.vault}/{obj.name} (Key Vault: {error.detail})"
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


# --------------------------------------------------------------------------------------
# Reading, with retries, one thread per vault
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    obj: ObjectSpec
    content: bytes | None = field(default=None, repr=False)  # never in a repr, so never in a traceback
    reason: str = ""
    vault_wide: bool = False

    @property
    def ok(self) -> bool:
        return self.content is not None


class Deadline:
    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._end = clock() + seconds

    def remaining(self) -> float:
        return max(0.0, self._end - self._clock())


@dataclass(frozen=True)
class Backoff:
    """Bounded exponential backoff with jitter; a server's Retry-After wins, up to a cap."""

    base: float = BACKOFF_BASE
    cap: float = BACKOFF_CAP
    retry_after_cap: float = RETRY_AFTER_CAP

    def delay(self, retry: int, error: ReadError, jitter: float) -> float:
        if error.retry_after is not None:
            return min(max(error.retry_after, 0.0), self.retry_after_cap)
        return min(self.cap, self.base * 2.0 ** (retry - 1)) * (0.5 + jitter / 2)


@dataclass
class Clock:
    """Time, sleep and jitter in one place so tests can replace them."""

    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    jitter: Callable[[], float] = random.random


def read_with_retries(
    reader: Reader, obj: ObjectSpec, config: FetchConfig, deadline: Deadline, clock: Clock, backoff: Backoff
) -> Outcome:
    """Read one object; transient errors are retried up to `config.retries` times within the deadline."""
    attempts, last = 0, None
    while deadline.remaining() >= MIN_ATTEMPT_SECONDS:
        attempts += 1
        try:
            return Outcome(obj, content=reader.read(obj, min(ATTEMPT_TIMEOUT_CAP, deadline.remaining())))
        except ReadError as error:
            last = error
        except Exception as exc:  # a bug in a reader: report the class only, its message could hold anything
            return Outcome(obj, reason=f"unexpected {type(exc).__name__}")
        if not last.transient or attempts > config.retries:
            return _failed(obj, last, attempts, config)
        pause = backoff.delay(attempts, last, clock.jitter())
        if pause + MIN_ATTEMPT_SECONDS > deadline.remaining():
            break
        clock.sleep(pause)
    if last is None:
        return Outcome(obj, reason=f"gave up: the {config.timeout:g}s budget was spent before this object was read")
    return _failed(obj, last, attempts, config, out_of_time=True)


def _failed(
    obj: ObjectSpec, error: ReadError, attempts: int, config: FetchConfig, out_of_time: bool = False
) -> Outcome:
    reason = failure_reason(obj, error, attempts, config.identity.client_id, out_of_time)
    return Outcome(obj, reason=reason, vault_wide=error.kind in _VAULT_WIDE)


def fetch_vault(
    reader: Reader, objects: Sequence[ObjectSpec], config: FetchConfig, deadline: Deadline, clock: Clock
) -> list[Outcome]:
    """The objects of one vault, in order; a vault-wide failure (token, unreachable) fails the rest untried."""
    outcomes: list[Outcome] = []
    backoff = Backoff()
    for obj in objects:
        wide = next((o for o in outcomes if o.vault_wide), None)
        if wide is not None:
            outcomes.append(Outcome(obj, reason=wide.reason, vault_wide=True))
        else:
            outcomes.append(read_with_retries(reader, obj, config, deadline, clock, backoff))
    return outcomes


def _run_in_daemon_thread(name: str, work: Callable[[], list[Outcome]]) -> concurrent.futures.Future[list[Outcome]]:
    # Daemon threads (not a ThreadPoolExecutor, whose workers are joined at exit) so that a vault stuck past the
    # budget cannot keep the init container alive.
    future: concurrent.futures.Future[list[Outcome]] = concurrent.futures.Future()

    def target() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(work())
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=target, name=f"fetch:{name}", daemon=True).start()
    return future


def fetch_all(reader: Reader, config: FetchConfig, clock: Clock | None = None) -> list[Outcome]:
    """Read every object: vaults concurrently, the objects of a vault sequentially. Never raises."""
    clock = clock or Clock()
    deadline = Deadline(config.timeout, clock.monotonic)
    futures = {
        vault: _run_in_daemon_thread(vault, functools.partial(fetch_vault, reader, objs, config, deadline, clock))
        for vault, objs in config.by_vault().items()
    }
    concurrent.futures.wait(futures.values(), timeout=config.timeout + HARD_STOP_GRACE)
    by_alias: dict[str, Outcome] = {}
    for vault, future in futures.items():
        for outcome in _vault_outcomes(vault, future, config):
            by_alias[outcome.obj.alias] = outcome
    return [by_alias[o.alias] for o in config.objects]


def _vault_outcomes(vault: str, future: concurrent.futures.Future[list[Outcome]], config: FetchConfig) -> list[Outcome]:
    objects = config.by_vault()[vault]
    if not future.done():
        reason = f"gave up: vault {vault} did not answer within the {config.timeout:g}s budget"
        return [Outcome(obj, reason=reason) for obj in objects]
    error = future.exception()
    if error is not None:
        return [Outcome(obj, reason=f"unexpected {type(error).__name__}") for obj in objects]
    return future.result()


# --------------------------------------------------------------------------------------
# Writing: temp file + rename, all or nothing
# --------------------------------------------------------------------------------------


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


def _oserror_text(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


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
        raise WriteError(alias, f"cannot write {directory / alias}: {_oserror_text(exc)}") from None
    _fsync_dir(directory)


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------


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
        _log(stderr, f"cannot write the termination log {path}: {_oserror_text(exc)}")


def _log(stderr: TextIO, message: str) -> None:
    stderr.write(f"kvinject fetch: {message}\n")
    stderr.flush()


def _fail(termination_log: Path, lines: list[str], stderr: TextIO, code: int) -> int:
    write_termination_log(termination_log, lines, stderr)
    return code


# --------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------


def _azure_reader(config: FetchConfig) -> Reader:
    from webhook import azure  # imported here: the SDK is only needed for real reads

    azure.quiet_sdk_logging()
    return azure.KeyVaultReader(config)


def _report_reads(outcomes: Sequence[Outcome], stderr: TextIO) -> list[str]:
    for outcome in outcomes:
        status = "read, not written (another object failed)" if outcome.ok else f"FAILED: {outcome.reason}"
        _log(stderr, f"{outcome.obj.label}: {status}")
    return [f"{o.obj.label}: {o.reason}" for o in outcomes if not o.ok]


def fetch(config: FetchConfig, reader: Reader, stderr: TextIO, clock: Clock | None = None) -> int:
    """Read everything, then write everything (or nothing); returns the exit code."""
    started = time.monotonic()
    outcomes = fetch_all(reader, config, clock)
    if not all(o.ok for o in outcomes):
        lines = _report_reads(outcomes, stderr)
        return _fail(config.termination_log, lines, stderr, EXIT_FAILED)
    remove_stale_temps(config.output_dir)
    files = [(o.obj.alias, o.content) for o in outcomes if o.content is not None]
    try:
        write_all(config.output_dir, files, config.fs_group)
    except WriteError as exc:
        label = next(o.label for o in config.objects if o.alias == exc.alias)
        _log(stderr, f"{label}: FAILED: {exc.message}; nothing written")
        return _fail(config.termination_log, [f"{label}: {exc.message}"], stderr, EXIT_FAILED)
    for obj in config.objects:
        _log(stderr, f"{obj.label}: written to {config.output_dir / obj.alias}")
    _log(stderr, f"{len(files)} object(s) written in {time.monotonic() - started:.2f}s")
    return EXIT_OK


def run(
    env: Mapping[str, str],
    reader_factory: ReaderFactory | None = None,
    *,
    stderr: TextIO | None = None,
    clock: Clock | None = None,
) -> int:
    """`kvinject fetch` against an explicit environment and reader (tests pass their own)."""
    err = stderr or sys.stderr
    try:
        config = load_config(env)
    except ConfigError as exc:
        lines = [f"configuration: {problem}" for problem in exc.problems]
        for line in lines:
            _log(err, line)
        return _fail(termination_log_path(env), lines, err, EXIT_CONFIG)
    try:
        reader = (reader_factory or _azure_reader)(config)
    except ValueError as exc:  # the SDK refused the identity settings
        line = f"configuration: cannot set up the workload identity credential: {exc}"
        _log(err, line)
        return _fail(config.termination_log, [line], err, EXIT_CONFIG)
    try:
        return fetch(config, reader, err, clock)
    finally:
        with contextlib.suppress(Exception):
            reader.close()


def _parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="kvinject fetch",
        description="Init-container entrypoint: write Key Vault objects into a directory, all or nothing.",
        epilog=(
            f"Configured by the environment: {ENV_OBJECTS}, {ENV_OUTPUT_DIR}, {ENV_FS_GROUP}, "
            f"{ENV_VAULT_DNS_SUFFIX}, {ENV_VAULT_URLS}, {ENV_TERMINATION_LOG}, {ENV_TIMEOUT}, {ENV_RETRIES}, "
            f"{ENV_CLIENT_ID}, {ENV_TENANT_ID}, {ENV_TOKEN_FILE}, {ENV_AUTHORITY}. "
            "Exit 0 all written, 1 an object failed (nothing written), 2 unusable configuration."
        ),
    )


def main(argv: list[str] | None = None) -> int:
    try:
        _parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), reported as a return code
        return exc.code if isinstance(exc.code, int) else EXIT_CONFIG
    return run(os.environ)


if __name__ == "__main__":
    # Run the importable module, not this `__main__` copy: webhook.azure shares its classes (ReadError, ...).
    from webhook.fetch import main as _main

    sys.exit(_main())
