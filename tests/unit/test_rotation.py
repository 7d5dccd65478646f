"""The certificate rotation planner (webhook/rotation.py): which step for which Secret, at which time."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
from cryptography.hazmat.primitives import serialization

from webhook import certs, rotation
from webhook.rotation import Material, Policy, Step

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
S = dt.timedelta(seconds=1)
POLICY = Policy(
    dns_names=("kvinject.kvinject.svc", "kvinject.kvinject.svc.cluster.local"),
    ips=("127.0.0.1",),
    ca_lifetime=1000 * S,
    ca_renew_before=300 * S,
    leaf_lifetime=200 * S,
    leaf_renew_before=50 * S,
    propagation=20 * S,
    skew=60 * S,
)


def fresh(at: dt.datetime = T0) -> Material:
    """What a first replica writes at `at`."""
    return rotation.advance(Material(), Decision(Step.BOOTSTRAP), POLICY, at)


def Decision(step: Step) -> rotation.Decision:
    return rotation.Decision(step, "test")


def secret_of(material: Material) -> tuple[dict[str, str], dict[str, str]]:
    return rotation.payload(material)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def foreign_tls() -> Material:
    """A Secret someone made by hand: a self-signed serving certificate, no CA key."""
    cert, key = certs.certificate("kvinject.kvinject.svc", dns_names=["kvinject.kvinject.svc"], server=True, now=T0)
    data = {
        "tls.crt": b64(cert.public_bytes(serialization.Encoding.PEM)),
        "tls.key": b64(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        ),
    }
    return rotation.read(data, {})


def leaf_as_ca() -> Material:
    """ca.crt/ca.key hold a certificate that is not a CA."""
    m = fresh()
    assert m.leaf is not None
    return replace(m, ca=m.leaf)


def other_ca_leaf() -> Material:
    """The leaf was signed by another CA (a replica that lost a race wrote half its state, or a hand edit)."""
    return replace(fresh(), leaf=fresh().leaf)


def renamed() -> Material:
    """The Service was renamed: the leaf's names are not the wanted ones."""
    old = replace(POLICY, dns_names=("old.kvinject.svc",))
    m = rotation.advance(Material(), Decision(Step.BOOTSTRAP), old, T0)
    return m


def mature(at: dt.datetime) -> Material:
    """The first CA, with a leaf renewed shortly before `at`."""
    return rotation.advance(fresh(), Decision(Step.RENEW_LEAF), POLICY, at - 10 * S)


def with_next(at: dt.datetime) -> Material:
    """CA rotation started at `at` (the CA near its end)."""
    return rotation.advance(mature(at), Decision(Step.ADD_CA), POLICY, at)


def promoted(at: dt.datetime) -> Material:
    return rotation.advance(with_next(at - 30 * S), Decision(Step.PROMOTE), POLICY, at)


@dataclass(frozen=True)
class Case:
    id: str
    material: Callable[[], Material]
    now: dt.datetime
    step: Step
    visible: bool = True
    reason: str = ""


CA_DUE = T0 + 710 * S  # past ca_lifetime - ca_renew_before (from 5 min before T0: certificates start early)
CASES = [
    Case("empty Secret", Material, T0, Step.BOOTSTRAP, reason="no CA"),
    Case("garbage: not base64", lambda: rotation.read({"ca.crt": "%%%", "ca.key": "%%%"}, {}), T0, Step.BOOTSTRAP),
    Case("garbage: not PEM", lambda: rotation.read({"ca.crt": b64(b"x"), "ca.key": b64(b"y")}, {}), T0, Step.BOOTSTRAP),
    Case("foreign: a hand-made TLS Secret without a CA key", foreign_tls, T0, Step.BOOTSTRAP),
    Case("foreign: ca.crt is not a CA", leaf_as_ca, T0, Step.BOOTSTRAP, reason="not a CA"),
    Case("CA expired (kvinject was down for long)", fresh, T0 + 1000 * S, Step.BOOTSTRAP, reason="expired"),
    Case("valid: nothing to do", fresh, T0 + 10 * S, Step.KEEP),
    Case("leaf near its end, CA far", fresh, T0 + 160 * S, Step.RENEW_LEAF, reason="nears its end"),
    Case("leaf expired", fresh, T0 + 300 * S, Step.RENEW_LEAF, reason="expired"),
    Case("leaf from another CA", other_ca_leaf, T0, Step.RENEW_LEAF, reason="not signed by the active CA"),
    Case("leaf names differ (Service renamed)", renamed, T0, Step.RENEW_LEAF, reason="names"),
    Case("CA near its end: add a next CA", lambda: mature(CA_DUE), CA_DUE, Step.ADD_CA),
    Case("overlap: next CA not visible yet", lambda: with_next(CA_DUE), CA_DUE + 30 * S, Step.KEEP, visible=False),
    Case("overlap: visible, propagation not over", lambda: with_next(CA_DUE), CA_DUE + 10 * S, Step.KEEP),
    Case("overlap: visible and propagated: promote", lambda: with_next(CA_DUE), CA_DUE + 20 * S, Step.PROMOTE),
    Case("retired CA kept during propagation", lambda: promoted(CA_DUE), CA_DUE + 10 * S, Step.KEEP),
    Case("retired CA dropped after propagation", lambda: promoted(CA_DUE), CA_DUE + 20 * S, Step.DROP_CA),
    Case(
        "skew: another replica's clock 2 min ahead issued the certificates",
        lambda: fresh(T0 + 120 * S),
        T0 - 5 * S,
        Step.KEEP,
    ),
    Case(
        "skew: next CA stamped 30 s in our future: wait",
        lambda: with_next(CA_DUE + 30 * S),
        CA_DUE,
        Step.KEEP,
    ),
    Case(
        "skew: next CA stamped an hour in our future: restamp",
        lambda: replace(with_next(CA_DUE), next_since=CA_DUE + 3600 * S),
        CA_DUE,
        Step.RESTAMP,
    ),
    Case(
        "next CA without its timestamp: restamp",
        lambda: replace(with_next(CA_DUE), next_since=None),
        CA_DUE + 30 * S,
        Step.RESTAMP,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_decide(case: Case) -> None:
    material = case.material()
    # Through the Secret's wire form, as replicas see it.
    material = rotation.read(*secret_of(material)) if not material.problems else material
    decision = rotation.decide(material, POLICY, case.now, case.visible)
    assert decision.step is case.step, decision
    assert case.reason in decision.reason


def test_garbage_is_named_without_values() -> None:
    material = rotation.read({"ca.crt": "%%%", "tls.key": b64(b"-----BEGIN PRIVATE KEY-----\nAAAA")}, {})
    assert material.ca is None and material.leaf is None
    assert any("ca.crt" in p for p in material.problems)
    assert not any("AAAA" in p for p in material.problems)


def test_each_step_changes_what_it_should() -> None:
    first = fresh()
    assert len(first.trusted()) == 1 and first.generation == 1

    renewed = rotation.advance(first, Decision(Step.RENEW_LEAF), POLICY, T0 + 160 * S)
    assert renewed.leaf != first.leaf and renewed.bundle() == first.bundle() and renewed.generation == 1

    added = rotation.advance(first, Decision(Step.ADD_CA), POLICY, CA_DUE)
    assert len(added.trusted()) == 2 and added.generation == 2 and added.next_since == CA_DUE
    assert added.leaf == first.leaf  # still served: signed by the old CA, which stays trusted
    assert added.ca == first.ca

    after = rotation.advance(added, Decision(Step.PROMOTE), POLICY, CA_DUE + 20 * S)
    assert after.ca == added.next_ca and after.retired == (first.ca.cert,)  # type: ignore[union-attr]
    assert after.leaf is not None and rotation.signed_by(after.leaf.cert, after.ca.cert)  # type: ignore[union-attr]
    assert after.bundle() == added.bundle() and after.generation == 2  # same CAs, same order

    dropped = rotation.advance(after, Decision(Step.DROP_CA), POLICY, CA_DUE + 40 * S)
    assert dropped.trusted() == [after.ca.cert] and dropped.generation == 3  # type: ignore[union-attr]


def test_restamp_sets_the_far_future_timestamp_to_now() -> None:
    material = replace(with_next(CA_DUE), next_since=CA_DUE + 3600 * S)
    restamped = rotation.advance(material, rotation.decide(material, POLICY, CA_DUE, True), POLICY, CA_DUE)
    assert restamped.next_since == CA_DUE and restamped.next_ca == material.next_ca


def test_leaf_never_outlives_its_ca() -> None:
    material = rotation.advance(fresh(), Decision(Step.RENEW_LEAF), POLICY, T0 + 900 * S)
    assert material.leaf is not None and material.ca is not None
    assert material.leaf.cert.not_valid_after_utc == material.ca.cert.not_valid_after_utc


def test_secret_round_trip() -> None:
    material = promoted(CA_DUE)
    again = rotation.read(*rotation.payload(material))
    assert rotation.payload(again) == rotation.payload(material) and not again.problems
    assert (again.next_since, again.retired_since, again.generation) == (None, CA_DUE, material.generation)


def test_keep_says_when_to_look_again() -> None:
    decision = rotation.decide(fresh(), POLICY, T0 + 10 * S, True)
    assert decision.step is Step.KEEP
    assert decision.recheck_at == fresh().leaf.cert.not_valid_after_utc - POLICY.leaf_renew_before  # type: ignore[union-attr]


def test_the_served_leaf_is_always_trusted_over_three_ca_lifetimes() -> None:
    """Simulated replicas and apiserver that each lag up to `propagation` behind the Secret: every leaf served in
    the last `propagation` verifies against every bundle published in the last `propagation`, at every second."""
    history: list[tuple[dt.datetime, Material]] = []
    material, now, steps = Material(), T0, set()
    while now < T0 + 3 * POLICY.ca_lifetime:
        while (decision := rotation.decide(material, POLICY, now, visible := True)).step is not Step.KEEP:
            assert visible
            material = rotation.advance(material, decision, POLICY, now)
            steps.add(decision.step)
        history.append((now, material))
        recent = [m for t, m in history if t > now - POLICY.propagation]
        leaves = {m.leaf.cert for m in recent if m.leaf is not None}
        for leaf in leaves:
            assert leaf.not_valid_after_utc > now
            for bundle in {tuple(m.trusted()) for m in recent}:
                assert any(rotation.signed_by(leaf, ca) for ca in bundle), now - T0
        now += S
    assert {Step.BOOTSTRAP, Step.RENEW_LEAF, Step.ADD_CA, Step.PROMOTE, Step.DROP_CA} <= steps
    assert material.generation >= 5  # bootstrap + two full CA rotations (add, drop) at least


def test_a_new_ca_made_from_nothing_keeps_what_was_trusted_before_for_one_propagation() -> None:
    """An upgrade from a Secret made by hand (its CA in the caBundle, its leaf still served by old pods)."""
    foreign_ca, _ = certs.certificate("my CA", ca=True, now=T0)
    expired_ca, _ = certs.certificate("old CA", ca=True, now=T0 - 30 * S, days=1 / 86400)
    not_a_ca, _ = certs.certificate("a leaf", now=T0)
    made = rotation.advance(foreign_tls(), Decision(Step.BOOTSTRAP), POLICY, T0, (foreign_ca, expired_ca, not_a_ca))
    assert made.retired == (foreign_ca,) and made.retired_since == T0
    assert foreign_ca in made.trusted() and made.ca is not None and made.ca.cert in made.trusted()
    assert rotation.decide(made, POLICY, T0 + 10 * S, True).step is Step.KEEP
    assert rotation.decide(made, POLICY, T0 + 20 * S, True).step is Step.DROP_CA
