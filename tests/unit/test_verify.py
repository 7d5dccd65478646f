"""Live verification's own logic through our seams: a fake Reader and a cluster that mints fake tokens."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.harness import CLIENT_ID, TENANT_ID
from webhook.cluster import FileCluster
from webhook.contract import ObjectRef
from webhook.identity import Identity
from webhook.live import Result, enabled
from webhook.metrics import Metrics
from webhook.model import Namespace
from webhook.providers.azure.access import VaultAccess
from webhook.providers.azure.verify import Verifier
from webhook.providers.reading import FailureKind, ObjectSpec, ReadError
from webhook.settings import Settings

WHO = Identity(CLIENT_ID, TENANT_ID)
DB = ObjectRef("kv-one", "db")
API = ObjectRef("kv-one", "api")


class TokenCluster(FileCluster):
    def __init__(self) -> None:
        super().__init__([])
        self.tokens = 0

    async def request_token(self, namespace: str, name: str, audience: str, seconds: int) -> str:
        assert audience == "api://AzureADTokenExchange" and seconds == 600
        self.tokens += 1
        return f"jwt-for-{namespace}-{name}"


TIMEOUTS: list[float] = []  # the socket timeout each read was given
HANG_GUARD = 60.0  # stops a test that would hang; no speed is asserted


class FakeReader:
    """Answers per object name; counts reads; can be slow."""

    def __init__(self, answers: dict[str, ReadError | None], delay: float, log: list[str]):
        self.answers, self.delay, self.log = answers, delay, log

    def read(self, obj: ObjectSpec, timeout: float) -> bytes:
        self.log.append(obj.name)
        TIMEOUTS.append(timeout)
        if self.delay > timeout:  # as the real reader's socket timeouts would
            time.sleep(timeout)
            raise ReadError(FailureKind.UNREACHABLE, "ServiceResponseTimeoutError", transient=True)
        time.sleep(self.delay)
        error = self.answers.get(obj.name)
        if error is not None:
            raise error
        return b"value-that-must-be-dropped"

    def close(self) -> None:
        pass


def verifier(
    answers: dict[str, ReadError | None] | None = None, delay: float = 0.0, **settings: Any
) -> tuple[Verifier, TokenCluster, list[str], list[str]]:
    cluster, reads, assertions = TokenCluster(), [], []

    def factory(access: VaultAccess, budget: float, assertion: Callable[[], str]) -> FakeReader:
        assertions.append(assertion())
        return FakeReader(answers or {}, delay, reads)

    s = Settings(live_verify=True, **settings)
    return Verifier(s, cluster, Metrics(), factory), cluster, reads, assertions


async def test_allowed_and_cached_for_the_positive_ttl() -> None:
    v, cluster, reads, assertions = verifier()
    first = await v.verify("ns", "sa", WHO, [DB, API])
    assert [f.result for f in first] == [Result.ALLOWED, Result.ALLOWED]
    assert assertions == ["jwt-for-ns-sa"] and sorted(reads) == ["api", "db"]
    await v.verify("ns", "sa", WHO, [DB])
    assert cluster.tokens == 1 and len(reads) == 2  # served from the cache


@pytest.mark.parametrize(
    ("error", "result", "fragment"),
    [
        (
            ReadError(FailureKind.DENIED, "AccessDenied no get permission"),
            Result.DENIED,
            f"Azure says identity {CLIENT_ID} may not read kv-one/db (Key Vault: AccessDenied no get permission)",
        ),
        (ReadError(FailureKind.NOT_FOUND, "SecretNotFound"), Result.NOT_FOUND, "kv-one/db does not exist in Key Vault"),
        (
            ReadError(FailureKind.TOKEN, "AADSTS70021: No matching federated identity record found"),
            Result.NOT_FEDERATED,
            "refused to exchange the ServiceAccount's token for identity",
        ),
        (
            ReadError(FailureKind.UNREACHABLE, "ServiceRequestError (connection refused)", transient=True),
            Result.UNVERIFIED,
            "could not verify kv-one/db: unreachable",
        ),
    ],
    ids=["denied", "not-found", "not-federated", "unreachable"],
)
async def test_azure_answers_map_to_findings(error: ReadError, result: Result, fragment: str) -> None:
    v, *_ = verifier({"db": error})
    (finding,) = await v.verify("ns", "sa", WHO, [DB])
    assert finding.result is result and fragment in finding.message


async def test_negative_results_use_their_own_ttl_and_unverified_is_never_cached() -> None:
    v, _cluster, reads, _ = verifier(
        {"db": ReadError(FailureKind.DENIED, "x"), "api": ReadError(FailureKind.UNREACHABLE, "y")},
        live_negative_ttl_seconds=0.2,
    )
    await v.verify("ns", "sa", WHO, [DB, API])
    await v.verify("ns", "sa", WHO, [DB, API])
    assert reads.count("db") == 1 and reads.count("api") == 2
    await asyncio.sleep(0.25)
    await v.verify("ns", "sa", WHO, [DB])
    assert reads.count("db") == 2


async def test_a_refused_token_exchange_answers_for_every_object_without_more_calls() -> None:
    v, _, reads, _ = verifier({"db": ReadError(FailureKind.TOKEN, "AADSTS70021")})
    findings = await v.verify("ns", "sa", WHO, [DB, ObjectRef("kv-one", "x")])
    assert {f.result for f in findings} == {Result.NOT_FEDERATED} and len(reads) == 1


async def test_concurrent_identical_checks_are_coalesced() -> None:
    v, cluster, reads, _ = verifier(delay=0.2)
    results = await asyncio.gather(*(v.verify("ns", "sa", WHO, [DB]) for _ in range(20)))
    assert all(r[0].result is Result.ALLOWED for r in results)
    assert cluster.tokens == 1 and reads == ["db"]


async def test_budget_bounds_a_hanging_azure() -> None:
    v, *_ = verifier(delay=HANG_GUARD * 10, live_budget_seconds=0.3)
    TIMEOUTS.clear()
    (finding,) = await asyncio.wait_for(v.verify("ns", "sa", WHO, [DB]), HANG_GUARD)
    assert finding.result is Result.UNVERIFIED
    # Both bounds end at the budget; which answers first (the read's own socket timeout, or the budget around
    # the whole check) depends on the machine's load, never on kvinject.
    assert "ServiceResponseTimeoutError" in finding.message or finding.message == "Azure did not answer within 0.3s"
    # The read runs in a thread that may start after the budget answered: wait for it (a hang guard, not a bound).
    await asyncio.wait_for(_until(lambda: bool(TIMEOUTS)), HANG_GUARD)
    assert max(TIMEOUTS) <= 0.3, "every read gets at most what is left of the budget"


async def _until(probe: Callable[[], bool]) -> None:
    while not probe():
        await asyncio.sleep(0.01)


async def test_principals_do_not_share_cache_entries() -> None:
    v, cluster, _, _ = verifier()
    await v.verify("ns", "sa", WHO, [DB])
    await v.verify("ns", "other", WHO, [DB])
    await v.verify("ns", "sa", Identity("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", TENANT_ID), [DB])
    assert cluster.tokens == 3


@pytest.mark.parametrize(
    ("server", "label", "relaxable", "expected"),
    [
        (False, None, False, False),
        (True, None, False, True),
        (False, "true", False, True),
        (True, "false", False, True),
        (True, "false", True, False),
        (True, "x", True, True),
    ],
    ids=["off", "on", "namespace-on", "namespace-off-refused", "namespace-off-on-allowlist", "bad-label-keeps-setting"],
)
def test_enabled(server: bool, label: str | None, relaxable: bool, expected: bool) -> None:
    ns = Namespace("ns", labels={"kvinject.io/live-verify": label} if label else {})
    settings = Settings(live_verify=server, relaxable_namespaces=frozenset({"ns"} if relaxable else set()))
    assert enabled(settings, ns) is expected


def test_reads_happen_off_the_event_loop() -> None:
    loop_thread: list[int] = []

    async def main() -> None:
        loop_thread.append(threading.get_ident())
        v, _, _, _ = verifier()
        original = v._check_all

        def spy(*args: Any) -> Any:
            assert threading.get_ident() != loop_thread[0]
            return original(*args)

        v._check_all = spy  # type: ignore[method-assign]
        await v.verify("ns", "sa", WHO, [DB])

    asyncio.run(main())
