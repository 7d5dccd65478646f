"""`kvinject fetch` without Azure: configuration, retries, concurrency, atomic all-or-nothing writes and the
termination log, with a fake of fetch's own Reader seam; and webhook.azure's translation of SDK exceptions."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.harness import CLIENT_ID, ROOT, TENANT_ID
from webhook import fetch
from webhook.contract import ObjectType
from webhook.fetch import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    Clock,
    FetchConfig,
    ReadOutcome,
    WriteError,
)
from webhook.fetch import reading as fetch_reading
from webhook.providers.azure import keyvault
from webhook.providers.azure.access import Credentials, VaultAccess
from webhook.providers.reading import FailureKind, ObjectSpec, ReadError

SECRET = "correct-horse-battery-staple-\u00e9"  # a value that must never be printed
TOKEN = "eyJhbGciOiJSUzI1NiJ9.c2VydmljZS1hY2NvdW50.c2lnbmF0dXJl"  # stands in for the projected token


# --------------------------------------------------------------------------------------
# Fakes of fetch's own seams
# --------------------------------------------------------------------------------------

Answer = bytes | ReadError | Callable[[], bytes]


@dataclass
class FakeReader:
    """Answers by alias, in order (the last answer repeats); records every call."""

    answers: dict[str, list[Answer]]
    calls: list[tuple[str, float]] = field(default_factory=list)
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def read(self, obj: ObjectSpec, timeout: float) -> bytes:
        with self.lock:
            self.calls.append((obj.alias, timeout))
            queue = self.answers[obj.alias]
            answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, ReadError):
            raise answer
        return answer() if callable(answer) else answer

    def close(self) -> None:
        self.closed = True

    def aliases(self) -> list[str]:
        return [alias for alias, _ in self.calls]


class FakeClock(Clock):
    """Time that only moves when fetch sleeps; jitter at its maximum."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        super().__init__(monotonic=lambda: self.now, sleep=self._sleep, jitter=lambda: 1.0)

    def _sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def transient(detail: str = "ServiceRequestError (connection refused)", **kwargs: float) -> ReadError:
    return ReadError(FailureKind.UNREACHABLE, detail, transient=True, **kwargs)


def spec(alias: str, vault: str = "payments-kv", name: str | None = None, version: str = "") -> ObjectSpec:
    return ObjectSpec(alias, vault, name or alias, ObjectType.SECRET, version)


def make_config(tmp_path: Path, objects: list[ObjectSpec], **kwargs: object) -> FetchConfig:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    token = tmp_path / "token"
    token.write_text(TOKEN)
    config = FetchConfig(
        objects=tuple(objects),
        output_dir=out,
        access=VaultAccess(Credentials(CLIENT_ID, TENANT_ID, token, "https://login.microsoftonline.com/")),
        termination_log=tmp_path / "termination-log",
    )
    return replace(config, **kwargs)  # type: ignore[arg-type]


def env_for(tmp_path: Path, objects: list[dict[str, str]] | None = None, **extra: str) -> dict[str, str]:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    token = tmp_path / "token"
    token.write_text(TOKEN)
    objs = objects if objects is not None else [{"alias": "db-password", "vault": "payments-kv", "name": "db-password"}]
    return {
        "KVINJECT_OBJECTS": json.dumps(objs),
        "KVINJECT_OUTPUT_DIR": str(out),
        "KVINJECT_TERMINATION_LOG": str(tmp_path / "termination-log"),
        "AZURE_CLIENT_ID": CLIENT_ID,
        "AZURE_TENANT_ID": TENANT_ID,
        "AZURE_FEDERATED_TOKEN_FILE": str(token),
        **extra,
    }


def run_with(env: dict[str, str], reader: FakeReader, clock: Clock | None = None) -> tuple[int, str]:
    stderr = io.StringIO()
    code = fetch.run(env, lambda _config: reader, stderr=stderr, clock=clock or FakeClock())
    return code, stderr.getvalue()


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


def test_config_from_a_complete_environment(tmp_path: Path) -> None:
    objects = [
        {"alias": "db-password", "vault": "payments-kv", "name": "db-password", "type": "secret", "version": ""},
        {"alias": "tls.pem", "vault": "shared-kv", "name": "api-tls", "type": "cert", "version": "a" * 32},
        {"alias": "legacy", "vault": "payments-kv", "name": "legacy"},  # type and version may be left out
    ]
    env = env_for(
        tmp_path,
        objects,
        KVINJECT_FS_GROUP="2000",
        KVINJECT_VAULT_URLS=json.dumps({"shared-kv": "https://10.0.0.4:8443/"}),
        KVINJECT_VAULT_DNS_SUFFIX="vault.azure.cn",
        KVINJECT_FETCH_TIMEOUT_SECONDS="12.5",
        KVINJECT_FETCH_RETRIES="2",
        AZURE_AUTHORITY_HOST="https://login.chinacloudapi.cn/",
    )
    config = fetch.load_config(env)
    assert config.objects == (
        ObjectSpec("db-password", "payments-kv", "db-password"),
        ObjectSpec("tls.pem", "shared-kv", "api-tls", ObjectType.CERT, "a" * 32),
        ObjectSpec("legacy", "payments-kv", "legacy"),
    )
    assert (config.fs_group, config.timeout, config.retries) == (2000, 12.5, 2)
    assert config.access.credentials == Credentials(
        CLIENT_ID, TENANT_ID, tmp_path / "token", "https://login.chinacloudapi.cn/"
    )
    assert config.access.vault_url("payments-kv") == "https://payments-kv.vault.azure.cn"
    assert config.access.vault_url("shared-kv") == "https://10.0.0.4:8443"
    assert (config.access.is_overridden("payments-kv"), config.access.is_overridden("shared-kv")) == (False, True)
    assert list(config.by_vault()) == ["payments-kv", "shared-kv"]
    assert config.objects[1].label == f"tls.pem (shared-kv/api-tls@{'a' * 32})"


def test_config_defaults(tmp_path: Path) -> None:
    config = fetch.load_config({k: v for k, v in env_for(tmp_path).items() if k != "KVINJECT_TERMINATION_LOG"})
    assert (config.fs_group, config.timeout, config.retries) == (None, 60.0, 4)
    assert config.termination_log == Path("/dev/termination-log")
    assert config.access.credentials.authority == "https://login.microsoftonline.com/"
    assert config.access.vault_url("payments-kv") == "https://payments-kv.vault.azure.net"


def test_empty_environment_lists_every_problem(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    stderr = io.StringIO()
    code = fetch.run({"KVINJECT_TERMINATION_LOG": str(log)}, lambda _c: FakeReader({}), stderr=stderr)
    expected = [
        "configuration: KVINJECT_OBJECTS is not set",
        "configuration: KVINJECT_OUTPUT_DIR is not set",
        "configuration: AZURE_CLIENT_ID is not set",
        "configuration: AZURE_TENANT_ID is not set",
        "configuration: AZURE_FEDERATED_TOKEN_FILE is not set",
    ]
    assert code == EXIT_CONFIG
    assert log.read_text().splitlines() == expected
    assert stderr.getvalue().splitlines() == [f"kvinject fetch: {line}" for line in expected]


def _obj(**fields: object) -> str:
    return json.dumps([{"alias": "a", "vault": "payments-kv", "name": "a", **fields}])


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"KVINJECT_OBJECTS": "[{"}, "KVINJECT_OBJECTS is not valid JSON (Expecting property name"),
        ({"KVINJECT_OBJECTS": "{}"}, "KVINJECT_OBJECTS must be a non-empty JSON list of objects"),
        ({"KVINJECT_OBJECTS": "[]"}, "KVINJECT_OBJECTS must be a non-empty JSON list of objects"),
        ({"KVINJECT_OBJECTS": '["a"]'}, "KVINJECT_OBJECTS[0]: must be a JSON object"),
        ({"KVINJECT_OBJECTS": '[{"vault": "payments-kv", "name": "a"}]'}, "KVINJECT_OBJECTS[0]: 'alias' must be a"),
        ({"KVINJECT_OBJECTS": _obj(alias="")}, "KVINJECT_OBJECTS[0]: alias is empty"),
        ({"KVINJECT_OBJECTS": _obj(alias="a/b")}, "alias 'a/b' is not a safe file name"),
        ({"KVINJECT_OBJECTS": _obj(alias=".hidden")}, "alias '.hidden' is not a safe file name"),
        ({"KVINJECT_OBJECTS": _obj(alias="..")}, "alias '..' is not a safe file name"),
        ({"KVINJECT_OBJECTS": _obj(vault="kv")}, "vault 'kv' must be 3-24 letters, digits or '-'"),
        ({"KVINJECT_OBJECTS": _obj(name="a_b")}, "name 'a_b' must be 1-127 letters, digits or '-'"),
        ({"KVINJECT_OBJECTS": _obj(type="key")}, "type 'key' is not supported (secret or cert)"),
        ({"KVINJECT_OBJECTS": _obj(version="../x")}, "version '../x' must be up to 32 letters or digits"),
        ({"KVINJECT_OBJECTS": _obj(version=3)}, "KVINJECT_OBJECTS[0]: 'version' must be a string"),
        (
            {"KVINJECT_OBJECTS": json.dumps([{"alias": "a", "vault": "abc", "name": n} for n in ("x", "y")])},
            "KVINJECT_OBJECTS: alias 'a' is used twice",
        ),
        ({"KVINJECT_OUTPUT_DIR": "/nonexistent/kvinject"}, "KVINJECT_OUTPUT_DIR /nonexistent/kvinject is not a dir"),
        ({"KVINJECT_FS_GROUP": "-1"}, "KVINJECT_FS_GROUP must be an integer between 0 and 4294967294, not '-1'"),
        ({"KVINJECT_FS_GROUP": "staff"}, "KVINJECT_FS_GROUP must be an integer"),
        ({"KVINJECT_FETCH_RETRIES": "21"}, "KVINJECT_FETCH_RETRIES must be an integer between 0 and 20, not '21'"),
        ({"KVINJECT_FETCH_TIMEOUT_SECONDS": "0"}, "KVINJECT_FETCH_TIMEOUT_SECONDS must be between 1 and 3600"),
        ({"KVINJECT_FETCH_TIMEOUT_SECONDS": "nan"}, "KVINJECT_FETCH_TIMEOUT_SECONDS must be between 1 and 3600"),
        ({"KVINJECT_FETCH_TIMEOUT_SECONDS": "soon"}, "KVINJECT_FETCH_TIMEOUT_SECONDS must be a number, not 'soon'"),
        ({"KVINJECT_VAULT_URLS": "nope"}, "KVINJECT_VAULT_URLS is not valid JSON"),
        ({"KVINJECT_VAULT_URLS": '["x"]'}, "KVINJECT_VAULT_URLS must be a JSON object of vault name -> https URL"),
        (
            {"KVINJECT_VAULT_URLS": '{"payments-kv": "http://127.0.0.1:80"}'},
            "KVINJECT_VAULT_URLS: the URL for 'payments-kv' must be an https URL",
        ),
        ({"KVINJECT_VAULT_DNS_SUFFIX": "vault azure"}, "KVINJECT_VAULT_DNS_SUFFIX 'vault azure' is not a DNS suffix"),
        ({"AZURE_AUTHORITY_HOST": "http://login"}, "AZURE_AUTHORITY_HOST must be an https URL, not 'http://login'"),
        ({"AZURE_FEDERATED_TOKEN_FILE": "/nonexistent/token"}, "AZURE_FEDERATED_TOKEN_FILE /nonexistent/token does"),
    ],
)
def test_unusable_configuration_exits_2(tmp_path: Path, overrides: dict[str, str], problem: str) -> None:
    env = {**env_for(tmp_path), **overrides}
    reader = FakeReader({})
    code, stderr = run_with(env, reader)
    log = (tmp_path / "termination-log").read_text()
    assert code == EXIT_CONFIG
    assert log.startswith("configuration: ") and problem in log
    assert problem in stderr
    assert reader.calls == [] and listing(tmp_path / "out") == []


# --------------------------------------------------------------------------------------
# Reasons and the termination log
# --------------------------------------------------------------------------------------

DB = spec("db-password")


@pytest.mark.parametrize(
    ("error", "attempts", "out_of_time", "reason"),
    [
        (
            ReadError(FailureKind.DENIED, "AccessDenied Caller is not authorized to perform action on resource."),
            1,
            False,
            f"identity {CLIENT_ID} may not read payments-kv/db-password "
            "(Key Vault: AccessDenied Caller is not authorized to perform action on resource.)",
        ),
        (ReadError(FailureKind.NOT_FOUND, "not found"), 1, False, "object not found in vault payments-kv"),
        (
            ReadError(FailureKind.TOKEN, "AADSTS70021: No match."),
            1,
            False,
            "token exchange failed: AADSTS70021: No match.",
        ),
        (
            ReadError(FailureKind.TOKEN_UNREACHABLE, "HTTP 503"),
            5,
            False,
            "token exchange failed: Microsoft Entra ID unreachable: HTTP 503 after 5 attempts",
        ),
        (
            transient(),
            5,
            False,
            "vault payments-kv unreachable: ServiceRequestError (connection refused) after 5 attempts",
        ),
        (
            transient("ServiceResponseError (timed out)"),
            1,
            True,
            "vault payments-kv unreachable: ServiceResponseError (timed out) after 1 attempt (time budget spent)",
        ),
        (
            ReadError(FailureKind.UNAVAILABLE, "HTTP 429 Throttled"),
            3,
            False,
            "vault payments-kv unavailable: HTTP 429 Throttled after 3 attempts",
        ),
        (
            ReadError(FailureKind.TLS, "TLS certificate verification failed"),
            1,
            False,
            "vault payments-kv unreachable: TLS certificate verification failed",
        ),
        (
            ReadError(FailureKind.REJECTED, "HTTP 401 Unauthorized AKV10032: Invalid issuer."),
            1,
            False,
            "Key Vault refused the read: HTTP 401 Unauthorized AKV10032: Invalid issuer.",
        ),
        (ReadError(FailureKind.INVALID, "no value"), 1, False, "cannot use the object: no value"),
    ],
    ids=lambda v: v.kind.value if isinstance(v, ReadError) else None,
)
def test_failure_reasons(error: ReadError, attempts: int, out_of_time: bool, reason: str) -> None:
    assert fetch.failure_reason(DB, error, attempts, CLIENT_ID, out_of_time) == reason


def test_termination_message_fits_unchanged() -> None:
    assert fetch.termination_message(["a: x", "b: y"]) == b"a: x\nb: y\n"
    exact = ["x" * 4095]
    assert fetch.termination_message(exact) == b"x" * 4095 + b"\n"


def test_termination_message_keeps_whole_lines_and_counts_the_rest() -> None:
    lines = [f"obj-{i:03d} (payments-kv/obj-{i:03d}): object not found in vault payments-kv" for i in range(100)]
    message = fetch.termination_message(lines)
    assert len(message) <= 4096
    kept = message.decode().splitlines()
    assert kept[:-1] == lines[: len(kept) - 1]
    assert kept[-1] == f"... and {100 - (len(kept) - 1)} more"


def test_termination_message_cuts_one_huge_line_on_a_character_boundary() -> None:
    message = fetch.termination_message(["\u00e9" * 5000, "second"])
    assert len(message) <= 4096
    text = message.decode("utf-8")  # still valid UTF-8
    assert text.startswith("\u00e9" * 100) and text.endswith("\n... and 1 more\n")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=3000), max_size=60), st.integers(min_value=64, max_value=4096))
def test_termination_message_never_exceeds_the_limit(lines: list[str], limit: int) -> None:
    message = fetch.termination_message(lines, limit)
    assert len(message) <= limit
    text = message.decode("utf-8")
    if sum(len(line.encode()) + 1 for line in lines) <= limit:
        assert text == "".join(f"{line}\n" for line in lines)
    else:
        assert text.endswith(" more\n")


def test_unwritable_termination_log_is_reported_on_stderr(tmp_path: Path) -> None:
    stderr = io.StringIO()
    fetch.write_termination_log(tmp_path / "missing" / "log", ["x"], stderr)
    assert "cannot write the termination log" in stderr.getvalue()


# --------------------------------------------------------------------------------------
# Writing files
# --------------------------------------------------------------------------------------


def _mode_gid(path: Path) -> tuple[int, int]:
    st = path.stat()
    return stat.S_IMODE(st.st_mode), st.st_gid


@pytest.mark.parametrize(("fs_group", "mode"), [(os.getgid(), 0o440), (None, 0o444)], ids=["fsGroup", "no-fsGroup"])
def test_write_all_modes_and_contents(tmp_path: Path, fs_group: int | None, mode: int) -> None:
    old_umask = os.umask(0o077)  # a strict umask must not take the app's read access away
    try:
        fetch.write_all(tmp_path, [("db-password", SECRET.encode()), ("empty", b"")], fs_group)
    finally:
        os.umask(old_umask)
    assert listing(tmp_path) == ["db-password", "empty"]
    assert (tmp_path / "db-password").read_bytes() == SECRET.encode()
    assert (tmp_path / "empty").read_bytes() == b""
    assert _mode_gid(tmp_path / "db-password") == (mode, os.getgid())


def test_write_all_replaces_an_existing_file_by_rename(tmp_path: Path) -> None:
    target = tmp_path / "db-password"
    target.write_bytes(b"previous")
    before = target.stat().st_ino
    fetch.write_all(tmp_path, [("db-password", b"current")], None)
    assert target.read_bytes() == b"current" and target.stat().st_ino != before
    assert listing(tmp_path) == ["db-password"]


def test_write_all_is_all_or_nothing_when_a_rename_fails(tmp_path: Path) -> None:
    (tmp_path / "blocked").mkdir()  # a directory where a file should go: its rename fails
    with pytest.raises(WriteError) as caught:
        fetch.write_all(tmp_path, [("first", b"1"), ("blocked", b"2"), ("third", b"3")], None)
    assert caught.value.alias == "blocked"
    assert caught.value.message == f"cannot write {tmp_path / 'blocked'}: Is a directory"
    assert listing(tmp_path) == ["blocked"]  # "first" was renamed, then removed; no temp file left


def test_write_all_refuses_a_group_it_cannot_set(tmp_path: Path) -> None:
    def refuse(_fd: int, _uid: int, _gid: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    with pytest.raises(WriteError, match="Operation not permitted"):
        fetch.write_all(tmp_path, [("a", b"1"), ("b", b"2")], os.getgid() + 1, chown=refuse)
    assert listing(tmp_path) == []


def test_write_all_accepts_eperm_when_the_group_is_already_right(tmp_path: Path) -> None:
    """A non-root init container in a setgid fsGroup directory: chown is refused but the group is inherited."""
    calls: list[int] = []

    def refuse(_fd: int, _uid: int, gid: int) -> None:
        calls.append(gid)
        raise PermissionError(1, "Operation not permitted")

    fetch.write_all(tmp_path, [("a", b"1")], os.getgid(), chown=refuse)
    assert calls == [os.getgid()] and _mode_gid(tmp_path / "a") == (0o440, os.getgid())


def test_content_is_private_before_it_is_written(tmp_path: Path) -> None:
    """Group and mode are set on the descriptor before the first byte goes in."""
    seen: list[tuple[int, int]] = []
    real_write = os.write

    def spying_write(fd: int, data: bytes | memoryview) -> int:
        st = os.fstat(fd)
        seen.append((stat.S_IMODE(st.st_mode), st.st_size))
        return real_write(fd, data)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "write", spying_write)
        fetch.write_all(tmp_path, [("a", b"value")], os.getgid())
    assert seen == [(0o440, 0)]


# --------------------------------------------------------------------------------------
# Retries and the budget
# --------------------------------------------------------------------------------------


def test_transient_errors_are_retried_with_bounded_exponential_backoff(tmp_path: Path) -> None:
    config = make_config(tmp_path, [DB], retries=4)
    reader = FakeReader({"db-password": [transient(), transient(), transient(), b"v"]})
    clock = FakeClock()
    [outcome] = fetch.fetch_all(reader, config, clock)
    assert outcome.ok and outcome.content == b"v"
    assert clock.sleeps == [0.5, 1.0, 2.0]  # jitter at its maximum: base * 2^n
    assert len(reader.calls) == 4


def test_backoff_is_capped_and_jittered() -> None:
    backoff = fetch.Backoff()
    error = transient()
    assert backoff.delay(10, error, 1.0) == fetch.BACKOFF_CAP
    assert backoff.delay(1, error, 0.0) == fetch.BACKOFF_BASE / 2


def test_persistent_transient_error_gives_up_after_the_retries(tmp_path: Path) -> None:
    config = make_config(tmp_path, [DB], retries=4)
    reader = FakeReader({"db-password": [transient()]})
    [outcome] = fetch.fetch_all(reader, config, FakeClock())
    assert not outcome.ok
    assert outcome.reason == "vault payments-kv unreachable: ServiceRequestError (connection refused) after 5 attempts"
    assert len(reader.calls) == 5


def test_retry_after_is_honoured_up_to_a_cap(tmp_path: Path) -> None:
    config = make_config(tmp_path, [DB])
    throttled = [ReadError(FailureKind.UNAVAILABLE, "HTTP 429", transient=True, retry_after=s) for s in (3, 600)]
    reader = FakeReader({"db-password": [*throttled, b"v"]})
    clock = FakeClock()
    [outcome] = fetch.fetch_all(reader, config, clock)
    assert outcome.ok
    assert clock.sleeps == [3, fetch.RETRY_AFTER_CAP]


@pytest.mark.parametrize(
    "kind", [FailureKind.DENIED, FailureKind.NOT_FOUND, FailureKind.TOKEN, FailureKind.REJECTED, FailureKind.TLS]
)
def test_permanent_errors_are_not_retried(tmp_path: Path, kind: FailureKind) -> None:
    config = make_config(tmp_path, [DB])
    reader = FakeReader({"db-password": [ReadError(kind, "x"), b"never"]})
    clock = FakeClock()
    [outcome] = fetch.fetch_all(reader, config, clock)
    assert not outcome.ok and len(reader.calls) == 1 and clock.sleeps == []


def test_the_budget_bounds_retries_and_each_attempt(tmp_path: Path) -> None:
    config = make_config(tmp_path, [DB], timeout=5.0, retries=20)
    reader = FakeReader({"db-password": [transient()]})
    clock = FakeClock()
    [outcome] = fetch.fetch_all(reader, config, clock)
    assert sum(clock.sleeps) <= 5.0
    assert clock.sleeps == [0.5, 1.0, 2.0]  # the next 4 s pause would not leave time for an attempt
    assert outcome.reason.endswith("after 4 attempts (time budget spent)")
    assert [t for _, t in reader.calls] == [5.0, 4.5, 3.5, 1.5]  # each attempt gets at most what is left


def test_no_attempt_is_started_once_the_budget_is_spent(tmp_path: Path) -> None:
    clock = FakeClock()

    def slow() -> bytes:
        clock.now += 10.0  # the whole budget
        return b"A"

    config = make_config(tmp_path, [spec("a"), spec("b")], timeout=10.0)
    reader = FakeReader({"a": [slow], "b": [b"never"]})
    outcomes = fetch.fetch_all(reader, config, clock)
    assert [o.reason for o in outcomes] == ["", "gave up: the 10s budget was spent before this object was read"]
    assert reader.aliases() == ["a"]


def test_a_reader_bug_is_reported_by_class_only(tmp_path: Path) -> None:
    def boom() -> bytes:
        raise RuntimeError(f"leaked {SECRET}")

    config = make_config(tmp_path, [DB])
    [outcome] = fetch.fetch_all(FakeReader({"db-password": [boom]}), config, FakeClock())
    assert outcome.reason == "unexpected RuntimeError"


# --------------------------------------------------------------------------------------
# Concurrency
# --------------------------------------------------------------------------------------


def test_vaults_are_read_concurrently_objects_of_a_vault_in_order(tmp_path: Path) -> None:
    barrier = threading.Barrier(2, timeout=5)  # passes only if both vaults are being read at the same time

    def meet(value: bytes) -> Callable[[], bytes]:
        def answer() -> bytes:
            barrier.wait()
            return value

        return answer

    objects = [spec("a1", "vault-a"), spec("b1", "vault-b"), spec("a2", "vault-a")]
    reader = FakeReader({"a1": [meet(b"A1")], "b1": [meet(b"B1")], "a2": [b"A2"]})
    outcomes = fetch.fetch_all(reader, make_config(tmp_path, objects), FakeClock())
    assert [(o.obj.alias, o.content) for o in outcomes] == [("a1", b"A1"), ("b1", b"B1"), ("a2", b"A2")]
    assert reader.aliases().index("a1") < reader.aliases().index("a2")


def test_a_vault_wide_failure_skips_the_rest_of_that_vault_only(tmp_path: Path) -> None:
    objects = [spec("a1", "vault-a"), spec("a2", "vault-a"), spec("b1", "vault-b")]
    token = ReadError(FailureKind.TOKEN, "AADSTS70021: No matching federated identity record found.")
    reader = FakeReader({"a1": [token], "a2": [b"never"], "b1": [b"B1"]})
    outcomes = fetch.fetch_all(reader, make_config(tmp_path, objects), FakeClock())
    assert [o.reason for o in outcomes] == [
        "token exchange failed: AADSTS70021: No matching federated identity record found.",
        "token exchange failed: AADSTS70021: No matching federated identity record found.",
        "",
    ]
    assert sorted(reader.aliases()) == ["a1", "b1"]


def test_a_stuck_vault_is_abandoned_at_the_hard_stop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch_reading, "HARD_STOP_GRACE", 0.1)
    monkeypatch.setattr(fetch_reading, "MIN_ATTEMPT_SECONDS", 0.05)
    release = threading.Event()
    reader = FakeReader({"a": [lambda: b"A"], "stuck": [lambda: bytes(release.wait(30))]})
    config = make_config(tmp_path, [spec("a", "vault-a"), spec("stuck", "vault-s")], timeout=0.2)
    try:
        outcomes = fetch.fetch_all(reader, config)
    finally:
        release.set()
    assert [o.reason for o in outcomes] == ["", "gave up: vault vault-s did not answer within the 0.2s budget"]


# --------------------------------------------------------------------------------------
# The whole run
# --------------------------------------------------------------------------------------


def test_success_writes_every_file_and_removes_stale_temps(tmp_path: Path) -> None:
    env = env_for(
        tmp_path,
        [
            {"alias": "db-password", "vault": "payments-kv", "name": "db-password"},
            {"alias": "api-key", "vault": "shared-kv", "name": "api-key"},
        ],
        KVINJECT_FS_GROUP=str(os.getgid()),
    )
    out = tmp_path / "out"
    (out / ".kvinject-db-password.dead.tmp").write_bytes(b"from a crashed run")
    reader = FakeReader({"db-password": [SECRET.encode()], "api-key": [b"k"]})
    code, stderr = run_with(env, reader)
    assert code == EXIT_OK
    assert listing(out) == ["api-key", "db-password"]
    assert (out / "db-password").read_bytes() == SECRET.encode()
    assert not (tmp_path / "termination-log").exists()
    assert reader.closed
    assert stderr.splitlines()[-1].startswith("kvinject fetch: 2 object(s) written in ")


def test_one_failure_writes_nothing(tmp_path: Path) -> None:
    env = env_for(
        tmp_path,
        [
            {"alias": "db-password", "vault": "payments-kv", "name": "db-password"},
            {"alias": "legacy", "vault": "payments-kv", "name": "legacy-token"},
            {"alias": "api-key", "vault": "shared-kv", "name": "api-key"},
        ],
    )
    (tmp_path / "out" / "api-key").write_bytes(b"from an earlier pod run")  # left as it was
    reader = FakeReader(
        {"db-password": [b"x"], "legacy": [ReadError(FailureKind.NOT_FOUND, "not found")], "api-key": [b"new"]}
    )
    code, stderr = run_with(env, reader)
    assert code == EXIT_FAILED
    assert (tmp_path / "termination-log").read_text() == (
        "legacy (payments-kv/legacy-token): object not found in vault payments-kv\n"
    )
    assert listing(tmp_path / "out") == ["api-key"]
    assert (tmp_path / "out" / "api-key").read_bytes() == b"from an earlier pod run"
    assert stderr.splitlines() == [
        "kvinject fetch: db-password (payments-kv/db-password): read, not written (another object failed)",
        "kvinject fetch: legacy (payments-kv/legacy-token): FAILED: object not found in vault payments-kv",
        "kvinject fetch: api-key (shared-kv/api-key): read, not written (another object failed)",
    ]


def test_a_write_failure_is_reported_and_leaves_nothing(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    (tmp_path / "out" / "db-password").mkdir()
    code, stderr = run_with(env, FakeReader({"db-password": [b"x"]}))
    assert code == EXIT_FAILED
    assert (tmp_path / "termination-log").read_text() == (
        f"db-password (payments-kv/db-password): cannot write {tmp_path / 'out' / 'db-password'}: Is a directory\n"
    )
    assert "nothing written" in stderr


def test_identity_settings_the_sdk_refuses_exit_2(tmp_path: Path) -> None:
    def refusing(_config: FetchConfig) -> FakeReader:
        raise ValueError("invalid authority")

    stderr = io.StringIO()
    assert fetch.run(env_for(tmp_path), refusing, stderr=stderr) == EXIT_CONFIG
    assert (tmp_path / "termination-log").read_text() == (
        "configuration: cannot set up the workload identity credential: invalid authority\n"
    )


def test_no_value_or_token_in_any_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    objects = [
        {"alias": "db-password", "vault": "payments-kv", "name": "db-password"},
        {"alias": "api-key", "vault": "shared-kv", "name": "api-key"},
    ]
    scenarios: list[dict[str, list[Answer]]] = [
        {"db-password": [SECRET.encode()], "api-key": [SECRET.encode()]},
        {"db-password": [SECRET.encode()], "api-key": [ReadError(FailureKind.DENIED, "AccessDenied x.")]},
        {"db-password": [SECRET.encode()], "api-key": [transient()]},
        {"db-password": [SECRET.encode()], "api-key": [ReadError(FailureKind.TOKEN, "AADSTS70021: No match.")]},
    ]
    outputs = []
    for index, answers in enumerate(scenarios):
        run_dir = tmp_path / f"run-{index}"
        run_dir.mkdir()
        code, stderr = run_with(env_for(run_dir, objects), FakeReader(answers))
        log = run_dir / "termination-log"
        outputs.append((code, stderr + (log.read_text() if log.exists() else "")))
    captured = capsys.readouterr()
    assert [code for code, _ in outputs] == [EXIT_OK, EXIT_FAILED, EXIT_FAILED, EXIT_FAILED]
    for text in [*(o for _, o in outputs), captured.out, captured.err]:
        assert SECRET not in text and TOKEN not in text
    assert SECRET not in repr(ReadOutcome(DB, content=SECRET.encode()))


# --------------------------------------------------------------------------------------
# Entry points and the Azure adapter's pure parts
# --------------------------------------------------------------------------------------


def test_main_help_and_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert fetch.main(["--help"]) == 0
    assert "KVINJECT_OBJECTS" in capsys.readouterr().out
    assert fetch.main(["--bogus"]) == 2


def test_module_entry_point_exits_2_on_bad_configuration(tmp_path: Path) -> None:
    env = {**os.environ, **env_for(tmp_path), "KVINJECT_OBJECTS": "nope"}
    done = subprocess.run(
        [sys.executable, "-m", "webhook.fetch"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "configuration: KVINJECT_OBJECTS is not valid JSON" in done.stderr


@pytest.mark.parametrize(
    ("message", "summary"),
    [
        (
            "Microsoft Entra ID error '(invalid_client) AADSTS70021: No matching federated identity record found for "
            "presented assertion. Assertion Issuer: 'https://kubernetes.default.svc'. Trace ID: 1 Correlation ID: 2'",
            "AADSTS70021: No matching federated identity record found for presented assertion.",
        ),
        (
            "Microsoft Entra ID error '(invalid_client) AADSTS700024: " + "x" * 400 + ". Trace ID: 1'",
            "AADSTS700024",
        ),
        (
            "The current credential is not configured to acquire tokens for tenant 123. To enable acquiring tokens...",
            "The current credential is not configured to acquire tokens for tenant 123.",
        ),
    ],
    ids=["first-sentence", "long-sentence-code-only", "no-aadsts"],
)
def test_aadsts_summary(message: str, summary: str) -> None:
    assert keyvault.aadsts_summary(message) == summary


@dataclass
class _Response:
    headers: dict[str, str]


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"x-ms-retry-after-ms": "1500", "Retry-After": "7"}, 1.5),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # a date in the past: retry now
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after(headers: dict[str, str], seconds: float | None) -> None:
    assert keyvault.retry_after(_Response(headers)) == seconds


def test_connection_detail_finds_the_socket_reason() -> None:
    refused = ConnectionRefusedError(111, "Connection refused")
    wrapper = OSError("Failed to establish a new connection")
    wrapper.__cause__ = refused
    outer = RuntimeError(wrapper)
    assert keyvault.connection_detail(outer) == "RuntimeError (connection refused)"
    assert keyvault.connection_detail(RuntimeError(TimeoutError())) == "RuntimeError (timed out)"
    assert keyvault.connection_detail(RuntimeError("x")) == "RuntimeError"

    class ServiceResponseTimeoutError(Exception):
        pass

    assert keyvault.connection_detail(ServiceResponseTimeoutError(TimeoutError())) == "ServiceResponseTimeoutError"


def test_token_errors_from_the_sdk() -> None:
    refused = ServiceRequestError("Connection failed", error=ConnectionRefusedError(111, "Connection refused"))
    unreachable = keyvault.token_error(refused)
    assert (unreachable.kind, unreachable.detail, unreachable.transient) == (
        FailureKind.TOKEN_UNREACHABLE,
        "ServiceRequestError (connection refused)",
        True,
    )
    entra = ClientAuthenticationError(
        message="Microsoft Entra ID error '(unauthorized_client) AADSTS700016: Application with identifier 'x' was "
        "not found in the directory 'y'. This can happen if ... Trace ID: 1'"
    )
    refusal = keyvault.token_error(entra)
    assert (refusal.kind, refusal.detail, refusal.transient) == (
        FailureKind.TOKEN,
        "AADSTS700016: Application with identifier 'x' was not found in the directory 'y'.",
        False,
    )
    missing = keyvault.token_error(FileNotFoundError(2, "No such file or directory"))
    assert missing.detail == "cannot read the service account token: No such file or directory"


def test_vault_connection_errors_are_transient_unless_tls() -> None:
    refused = keyvault.vault_error(ServiceRequestError("x", error=ConnectionRefusedError(111, "Connection refused")))
    assert (refused.kind, refused.transient) == (FailureKind.UNREACHABLE, True)
    tls = keyvault.vault_error(ServiceRequestError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"))
    assert (tls.kind, tls.detail, tls.transient) == (FailureKind.TLS, "TLS certificate verification failed", False)
