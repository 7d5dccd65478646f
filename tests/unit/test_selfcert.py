"""The replicas' loop around the planner (webhook/selfcert.py) over an in-memory API with the apiserver's optimistic
concurrency (kvinject's own seam `ApiObjects`): races between replicas, stale reads, readiness."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from webhook import rotation
from webhook.cluster.api import Conflict
from webhook.selfcert import ADMISSION, SelfCert
from webhook.settings import Settings

SECRET = "/api/v1/namespaces/kvinject/secrets/kvinject-tls"
CONFIGS = [
    f"{ADMISSION}/mutatingwebhookconfigurations/kvinject",
    f"{ADMISSION}/validatingwebhookconfigurations/kvinject",
    f"{ADMISSION}/validatingwebhookconfigurations/kvinject-provider-classes",
]


class FakeApi:
    """Objects by path; every write needs the resourceVersion it read (else 409), as the apiserver does.
    `before_write` runs before each write (to let another replica act in between)."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.before_write: Callable[[str], None] = lambda path: None
        for path in CONFIGS:
            self._store(path, {"metadata": {"name": path.rsplit("/", 1)[-1]}, "webhooks": [{"clientConfig": {}}] * 2})

    def _store(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        obj = copy.deepcopy(obj)
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.version)
        self.objects[path] = obj
        return copy.deepcopy(obj)

    def get(self, path: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.objects.get(path))

    def create(self, collection: str, obj: dict[str, Any]) -> dict[str, Any]:
        path = f"{collection}/{obj['metadata']['name']}"
        self.before_write(path)
        if path in self.objects:
            raise Conflict(f"{path} exists")
        return self._store(path, obj)

    def replace(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.before_write(path)
        current = self.objects.get(path)
        if current is None or current["metadata"]["resourceVersion"] != obj["metadata"].get("resourceVersion"):
            raise Conflict(f"{path} changed")
        return self._store(path, obj)

    def watch(self, collection: str, field_selector: str, stop: threading.Event) -> Iterator[dict[str, Any]]:
        return iter(())


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


def replica(api: FakeApi, tmp_path: Path, name: str, clock: Clock) -> SelfCert:
    settings = Settings(
        cert_mode="self",
        cert_file=tmp_path / name / "tls.crt",
        key_file=tmp_path / name / "tls.key",
        cert_hosts=["127.0.0.1"],
        cert_ca_lifetime_seconds=1000,
        cert_ca_renew_before_seconds=300,
        cert_leaf_lifetime_seconds=200,
        cert_leaf_renew_before_seconds=50,
        cert_propagation_seconds=20,
        cert_check_seconds=1,
    )
    return SelfCert(api, settings, clock=clock)  # type: ignore[arg-type]


def bundles(api: FakeApi) -> set[str]:
    return {h["clientConfig"].get("caBundle", "") for p in CONFIGS for h in api.objects[p]["webhooks"]}


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_two_replicas_starting_together_converge_on_one_ca(tmp_path: Path, clock: Clock) -> None:
    api = FakeApi()
    a, b = replica(api, tmp_path, "a", clock), replica(api, tmp_path, "b", clock)

    # b completes a whole round between a's read and a's create: a's create conflicts, a reads again.
    def b_first(path: str) -> None:
        api.before_write = lambda path: None
        b.sync()

    api.before_write = b_first
    a.sync()
    leaf_a, leaf_b = (r.cert_file.read_bytes() for r in (a, b))
    assert leaf_a == leaf_b
    material = rotation.read(api.objects[SECRET]["data"], api.objects[SECRET]["metadata"]["annotations"])
    assert len(material.trusted()) == 1
    assert bundles(api) == {base64.b64encode(material.bundle()).decode()}
    assert a.not_ready(leaf_a) is None and b.not_ready(leaf_b) is None


def test_a_replica_with_an_older_secret_never_takes_a_new_ca_out_of_the_bundle(tmp_path: Path, clock: Clock) -> None:
    api = FakeApi()
    a, b = replica(api, tmp_path, "a", clock), replica(api, tmp_path, "b", clock)
    a.sync()
    old_secret = api.get(SECRET)
    assert old_secret is not None
    clock.now += dt.timedelta(seconds=710)  # the CA nears its end: b adds a next CA and publishes both
    a.sync()  # the leaf renews first (its own end); then the CA
    decision = b.sync()
    assert decision.step is rotation.Step.ADD_CA, decision
    two = bundles(api)
    (published,) = two
    assert len(x509.load_pem_x509_certificates(base64.b64decode(published))) == 2
    # a, still holding the Secret it read before, tries to publish its one-CA bundle everywhere: refused.
    stale = rotation.read(old_secret["data"], old_secret["metadata"]["annotations"])
    for path in CONFIGS:
        a._publish(path, api.get(path), stale)  # type: ignore[arg-type]
    assert bundles(api) == two


def test_readiness_needs_the_served_leaf_trusted_in_every_configuration(tmp_path: Path, clock: Clock) -> None:
    api = FakeApi()
    a = replica(api, tmp_path, "a", clock)
    assert a.not_ready(None) == "serving certificate not loaded"
    a.sync()
    leaf = a.cert_file.read_bytes()
    assert a.not_ready(leaf) is None
    # Someone re-applies a configuration without the caBundle: not ready until the next round writes it back.
    config = api.objects[CONFIGS[2]]
    config["webhooks"] = [{"clientConfig": {}}]
    api.objects[CONFIGS[2]] = config
    a._trusted = [hook for p in CONFIGS for hook in _hooks(api, p)]
    assert a.not_ready(leaf) == "caBundle not published yet"
    a.sync()
    assert a.not_ready(leaf) is None


def _hooks(api: FakeApi, path: str) -> list[list[Any]]:
    from webhook.selfcert import _bundle_of

    return _bundle_of(api.objects[path])


def test_a_secret_reset_below_the_published_generation_is_renumbered(tmp_path: Path, clock: Clock) -> None:
    api = FakeApi()
    a = replica(api, tmp_path, "a", clock)
    a.sync()
    secret = api.objects[SECRET]
    secret["metadata"]["annotations"][rotation.GENERATION] = "0"  # a hand edit, or a restore from a backup
    a.sync()
    assert int(api.objects[SECRET]["metadata"]["annotations"][rotation.GENERATION]) > 1
    assert a.not_ready(a.cert_file.read_bytes()) is None


def test_missing_webhook_configuration_keeps_the_replica_unready(tmp_path: Path, clock: Clock) -> None:
    api = FakeApi()
    del api.objects[CONFIGS[1]]
    a = replica(api, tmp_path, "a", clock)
    a.sync()
    assert a.not_ready(a.cert_file.read_bytes()) == "caBundle not published yet"


def test_upgrade_from_a_hand_made_secret_keeps_its_ca_trusted_until_the_new_leaf_is_everywhere(
    tmp_path: Path, clock: Clock
) -> None:
    from webhook import certs

    ca = certs.certificate("my CA", ca=True)
    leaf = certs.certificate("kvinject.kvinject.svc", issuer=ca, dns_names=["kvinject.kvinject.svc"], server=True)
    pem = ca[0].public_bytes(serialization.Encoding.PEM)
    api = FakeApi()
    for path in CONFIGS:  # what `kvinject certs` + a hand-made caBundle left
        api.objects[path]["webhooks"] = [{"clientConfig": {"caBundle": base64.b64encode(pem).decode()}}]
    api.objects[SECRET] = {
        "metadata": {"name": "kvinject-tls", "resourceVersion": "1"},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": base64.b64encode(leaf[0].public_bytes(serialization.Encoding.PEM)).decode()},
    }
    a = replica(api, tmp_path, "a", clock)
    assert a.sync().step is rotation.Step.BOOTSTRAP
    old_leaf = leaf[0].public_bytes(serialization.Encoding.PEM)
    assert a.not_ready(a.cert_file.read_bytes()) is None
    assert a.not_ready(old_leaf) is None  # an old pod still serving the hand-made leaf is still trusted
    clock.now += dt.timedelta(seconds=20)
    assert a.sync().step is rotation.Step.DROP_CA
    a.sync()
    assert a.not_ready(old_leaf) == "caBundle not published yet"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"KVINJECT_CERT_CA_RENEW_BEFORE_SECONDS": "100", "KVINJECT_CERT_CA_LIFETIME_SECONDS": "100"}, "CA_LIFETIME"),
        (
            {"KVINJECT_CERT_LEAF_RENEW_BEFORE_SECONDS": "90", "KVINJECT_CERT_LEAF_LIFETIME_SECONDS": "60"},
            "LEAF_LIFETIME",
        ),
        ({"KVINJECT_CERT_PROPAGATION_SECONDS": "60", "KVINJECT_CERT_CA_RENEW_BEFORE_SECONDS": "100"}, "twice"),
        ({"KVINJECT_CERT_PROPAGATION_SECONDS": "10", "KVINJECT_CERT_CHECK_SECONDS": "6"}, "CHECK_SECONDS"),
    ],
    ids=["ca renewed at birth", "leaf renewed before birth", "no room for add and drop", "propagation under 2 checks"],
)
def test_serve_refuses_timings_without_room_for_the_overlap(
    env: dict[str, str], names: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from webhook.cli import EXIT_UNUSABLE, main

    monkeypatch.setenv("KVINJECT_CERT_MODE", "self")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["serve", "--cluster", "examples/cluster.yaml"]) == EXIT_UNUSABLE
    err = capsys.readouterr().err
    assert "unusable settings" in err and names in err
