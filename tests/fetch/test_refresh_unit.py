"""`kvinject fetch --refresh` (the refresh sidecar) without Azure: which objects are read again, when files are
swapped, how throttling and failures shape the next wait, and what it tells; with fakes of fetch's own Reader seam
and of its wait, so no test takes time."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fetch.test_fetch_unit import SECRET, FakeClock, env_for, make_config, spec
from webhook.fetch import EXIT_CONFIG, write_all
from webhook.fetch import refresh as sidecar
from webhook.fetch.main import _parser
from webhook.providers.reading import FailureKind, ObjectSpec, ReadError, Versioned

Answer = tuple[bytes, str] | ReadError


@dataclass
class VersionedFake:
    """A VersionedReader answering by alias from a script, one answer per round (the last one repeats)."""

    answers: dict[str, list[Answer]]
    calls: list[str] = field(default_factory=list)

    def _next(self, obj: ObjectSpec) -> Answer:
        self.calls.append(obj.alias)
        queue = self.answers[obj.alias]
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def read_versioned(self, obj: ObjectSpec, timeout: float) -> Versioned:
        answer = self._next(obj)
        if isinstance(answer, ReadError):
            raise answer
        return Versioned(*answer)

    def read(self, obj: ObjectSpec, timeout: float) -> bytes:
        return self.read_versioned(obj, timeout).content

    def close(self) -> None:
        pass


@dataclass
class ProbingFake(VersionedFake):
    """A store that tells versions without values (a VersionProbe): `versions` answers the probe."""

    versions: dict[str, str] = field(default_factory=dict)
    probes: list[str] = field(default_factory=list)

    def current_version(self, obj: ObjectSpec, timeout: float) -> str:
        self.probes.append(obj.alias)
        return self.versions[obj.alias]


@dataclass
class Waits:
    """The sidecar's waits, recorded instead of slept."""

    seconds: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> bool:
        self.seconds.append(seconds)
        return False


def throttled(retry_after: float | None) -> ReadError:
    return ReadError(FailureKind.UNAVAILABLE, "HTTP 429 Throttled", transient=True, retry_after=retry_after)


def run(tmp_path: Path, objects: list[ObjectSpec], reader: VersionedFake, rounds: int, interval: float = 300):
    config = make_config(tmp_path, objects)
    write_all(config.output_dir, [(o.alias, b"initial") for o in objects], None)  # what kvinject-fetch wrote
    stderr, waits = io.StringIO(), Waits()
    code = sidecar.refresh(config, reader, interval, stderr, FakeClock(), rounds=rounds, wait=waits)
    files = {p.name: p.read_bytes() for p in sorted(config.output_dir.iterdir())}
    return code, files, waits.seconds, stderr.getvalue(), config.termination_log.read_text()


@pytest.mark.parametrize(
    ("answers", "expected_files", "expected_log"),
    [
        ({"db": [(b"initial", "v1")]}, {"db": b"initial", "api": b"initial"}, []),
        (
            {"db": [(b"initial", "v1"), (SECRET.encode(), "v2")]},
            {"db": SECRET.encode(), "api": b"initial"},
            ["refresh: db (payments-kv/db): changed to version v2, written"],
        ),
        (
            {"db": [(b"initial", "v1"), (b"initial", "v2")]},  # a new version with the same value: nothing to swap
            {"db": b"initial", "api": b"initial"},
            [],
        ),
        (
            {"db": [ReadError(FailureKind.NOT_FOUND, "not found"), (b"initial", "v1")]},
            {"db": b"initial", "api": b"initial"},
            [],
        ),
    ],
    ids=["unchanged", "new-version-swapped", "same-value-new-version", "deleted-then-back-keeps-file"],
)
def test_only_changed_files_are_swapped(
    tmp_path: Path, answers: dict[str, list[Answer]], expected_files: dict[str, bytes], expected_log: list[str]
) -> None:
    objects = [spec("db"), spec("api", version="a" * 32)]  # api is pinned
    reader = VersionedFake(answers)
    code, files, _, stderr, termination = run(tmp_path, objects, reader, rounds=2)
    assert code == 0
    assert files == expected_files
    assert reader.calls == ["db", "db"]  # the pinned object is never read again
    assert [line.removeprefix("kvinject fetch: ") for line in stderr.splitlines() if "written" in line] == expected_log
    assert termination.startswith("refresh: 2 round(s)")
    assert SECRET not in stderr + termination


def test_the_swap_replaces_the_file_atomically(tmp_path: Path) -> None:
    """A reader holding the old file open still reads the old content; the name now holds the new one."""
    config = make_config(tmp_path, [spec("db")])
    write_all(config.output_dir, [("db", b"old")], None)
    held = (config.output_dir / "db").open("rb")
    reader = VersionedFake({"db": [(b"new", "v2")]})
    sidecar.refresh(config, reader, 60, io.StringIO(), FakeClock(), rounds=1, wait=Waits())
    assert held.read() == b"old"
    held.close()
    assert (config.output_dir / "db").read_bytes() == b"new"
    assert sorted(p.name for p in config.output_dir.iterdir()) == ["db"]  # no temp file left


@pytest.mark.parametrize(
    ("answers", "expected_calls", "expected_second_wait"),
    [
        # 429 with Retry-After 42 s: the rest of that vault waits for the next round, which waits 42 s.
        ({"a": [throttled(42.0), (b"initial", "v")], "b": [(b"initial", "v")]}, ["a", "a", "b"], 42.0),
        # A Retry-After shorter than the first retry: the usual retry (5 s) wins.
        ({"a": [throttled(0.5), (b"initial", "v")], "b": [(b"initial", "v")]}, ["a", "a", "b"], 5.0),
        # A 429 without Retry-After still waits at least a second, then the usual retry.
        ({"a": [throttled(None), (b"initial", "v")], "b": [(b"initial", "v")]}, ["a", "a", "b"], 5.0),
        # Any other failure: retried sooner than the interval, the other objects still read.
        (
            {
                "a": [ReadError(FailureKind.UNREACHABLE, "refused", transient=True), (b"initial", "v")],
                "b": [(b"x", "")],
            },
            ["a", "b", "a", "b"],
            5.0,
        ),
    ],
    ids=["retry-after-honoured", "short-retry-after", "429-without-header", "unreachable"],
)
def test_failures_and_throttling_shape_the_next_wait(
    tmp_path: Path, answers: dict[str, list[Answer]], expected_calls: list[str], expected_second_wait: float
) -> None:
    reader = VersionedFake(answers)
    _, _, waits, stderr, _ = run(tmp_path, [spec("a"), spec("b")], reader, rounds=2, interval=300)
    assert reader.calls == expected_calls
    assert waits[0] == pytest.approx(300 * 1.1)  # FakeClock's jitter is at its maximum
    assert waits[1] == pytest.approx(expected_second_wait)
    assert "the file is unchanged" in stderr


def test_a_retry_after_longer_than_the_interval_is_honoured_whole(tmp_path: Path) -> None:
    reader = VersionedFake({"a": [throttled(900.0), (b"initial", "v")]})
    _, _, waits, stderr, termination = run(tmp_path, [spec("a")], reader, rounds=2, interval=60)
    assert waits[1] == 900.0
    assert "waits at least 900s (Retry-After)" in stderr
    assert "1 throttled" in termination


def test_failed_rounds_back_off_up_to_the_interval(tmp_path: Path) -> None:
    reader = VersionedFake({"a": [ReadError(FailureKind.UNREACHABLE, "refused", transient=True)]})
    _, _, waits, _, termination = run(tmp_path, [spec("a")], reader, rounds=5, interval=60)
    assert waits[1:] == [5.0, 10.0, 20.0, 40.0]
    assert (tmp_path / "out" / "a").read_bytes() == b"initial"
    assert termination.startswith("refresh: 5 round(s), 0 file update(s), 5 failed round(s)")


@pytest.mark.parametrize(
    ("probed", "expected_reads"),
    [("v1", []), ("v2", ["db"])],
    ids=["same-version-no-value-read", "new-version-read"],
)
def test_a_version_probe_is_asked_before_reading(tmp_path: Path, probed: str, expected_reads: list[str]) -> None:
    reader = ProbingFake({"db": [(b"initial", "v1"), (b"next", "v2")]}, versions={"db": probed})
    run(tmp_path, [spec("db")], reader, rounds=2)
    # Round 1 learns the file's version by reading; round 2 asks the probe first.
    assert reader.probes == ["db"]
    assert reader.calls == ["db", *expected_reads]


def test_sigterm_stops_the_wait(tmp_path: Path) -> None:
    config = make_config(tmp_path, [spec("db")])
    stop = sidecar.threading.Event()
    stop.set()  # as SIGTERM's handler does
    reader = VersionedFake({"db": [(b"x", "v")]})
    code = sidecar.refresh(config, reader, 3600, io.StringIO(), FakeClock(), stop=stop)
    assert code == 0
    assert reader.calls == []
    assert config.termination_log.read_text().startswith("refresh: 0 round(s)")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [(["--refresh", "5m"], 300), (["--refresh", "90s"], 90), (["--refresh", "1h30m"], 5400), ([], None)],
    ids=["minutes", "seconds", "hours-minutes", "absent"],
)
def test_refresh_flag(argv: list[str], expected: int | None) -> None:
    assert _parser().parse_args(argv).refresh == expected


@pytest.mark.parametrize("text", ["5", "5x", "", "0s", "m5"], ids=["no-unit", "bad-unit", "empty", "zero", "order"])
def test_refresh_flag_rejects(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["--refresh", text])
    assert "is not a duration" in capsys.readouterr().err


def test_run_refresh_sets_up_as_kvinject_fetch_does(tmp_path: Path) -> None:
    """The same environment, configuration errors and reader set-up as `kvinject fetch`, then the loop."""
    env = env_for(tmp_path)
    write_all(tmp_path / "out", [("db-password", b"initial")], None)
    reader = VersionedFake({"db-password": [(b"rotated", "v2")]})
    stderr = io.StringIO()
    code = sidecar.run_refresh(env, 60, lambda _config: reader, stderr=stderr, rounds=1, wait=Waits())
    assert code == 0
    assert (tmp_path / "out" / "db-password").read_bytes() == b"rotated"
    assert reader.calls == ["db-password"]

    broken = sidecar.run_refresh({"KVINJECT_TERMINATION_LOG": str(tmp_path / "log")}, 60, lambda _c: reader)
    assert broken == EXIT_CONFIG
    assert (tmp_path / "log").read_text().startswith("configuration: KVINJECT_OBJECTS is not set")


@dataclass
class RoundScopedFake(VersionedFake):
    """A reader holding a session per round (Vault's): `events` records reads and new rounds in order."""

    events: list[str] = field(default_factory=list)

    def read_versioned(self, obj: ObjectSpec, timeout: float) -> Versioned:
        self.events.append(f"read {obj.alias}")
        return super().read_versioned(obj, timeout)

    def new_round(self) -> None:
        self.events.append("new round")


def test_a_round_scoped_reader_ends_each_round_with_a_new_round(tmp_path: Path) -> None:
    objects = [ObjectSpec("db", "payments-kv", "db")]
    reader = RoundScopedFake({"db": [(b"initial", "v1")]})
    code, *_ = run(tmp_path, objects, reader, rounds=2)
    assert code == 0
    assert reader.events == ["read db", "new round", "read db", "new round"]
