"""cert_mode self: kvinject keeps its own CA and serving certificate (the I/O around `webhook.rotation`).

Every replica runs one `SelfCert`: a thread that watches the Secret, and at each change (and every
cert_check_seconds) reads the Secret and the webhook configurations afresh, asks the planner for the next
step, writes it, publishes the trust bundle into the webhook configurations and writes the leaf to
cert_file/key_file, from where the server's reloader serves it without a restart.

No leader: every write carries the resourceVersion it was read at, and a replica that loses a race (409)
reads again and decides again, so N replicas converge on one CA. A webhook configuration carries the bundle's
generation (an annotation); a replica whose Secret is older than that never writes its bundle there, so a
late replica cannot take a new CA out of the apiserver's trust.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import ipaddress
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from webhook import certs, rotation
from webhook.cluster.api import ApiObjects, Conflict
from webhook.cluster.base import ClusterError
from webhook.settings import Settings

log = logging.getLogger(__name__)

ADMISSION = "/apis/admissionregistration.k8s.io/v1"
MANAGED_BY = {"app.kubernetes.io/managed-by": "kvinject"}


def policy(settings: Settings) -> rotation.Policy:
    """The planner's policy from the settings: names from the Service and namespace, plus cert_hosts."""
    dns, ips = [], []
    service = f"{settings.service_name}.{settings.pod_namespace}.svc"
    for host in [service, f"{service}.cluster.local", *settings.cert_hosts]:
        try:
            ips.append(str(ipaddress.ip_address(host)))
        except ValueError:
            dns.append(host)
    seconds = dt.timedelta(seconds=1)
    return rotation.Policy(
        dns_names=tuple(dict.fromkeys(dns)),
        ips=tuple(dict.fromkeys(ips)),
        ca_lifetime=settings.cert_ca_lifetime_seconds * seconds,
        ca_renew_before=settings.cert_ca_renew_before_seconds * seconds,
        leaf_lifetime=settings.cert_leaf_lifetime_seconds * seconds,
        leaf_renew_before=settings.cert_leaf_renew_before_seconds * seconds,
        propagation=settings.cert_propagation_seconds * seconds,
    )


def _bundle_of(config: dict[str, Any]) -> list[list[x509.Certificate]]:
    """Each webhook's trusted CAs in a webhook configuration (an unreadable caBundle trusts nothing)."""
    out = []
    for hook in config.get("webhooks") or []:
        raw = (hook.get("clientConfig") or {}).get("caBundle") or ""
        try:
            out.append(x509.load_pem_x509_certificates(base64.b64decode(raw, validate=True)))
        except (ValueError, binascii.Error):
            out.append([])
    return out


def _carries(config: dict[str, Any], material: rotation.Material) -> bool:
    want = base64.b64encode(material.bundle()).decode("ascii")
    return _generation(config) == material.generation and all(
        (hook.get("clientConfig") or {}).get("caBundle") == want for hook in config.get("webhooks") or []
    )


def _generation(obj: dict[str, Any]) -> int:
    try:
        return int(((obj.get("metadata") or {}).get("annotations") or {}).get(rotation.GENERATION, "0"))
    except ValueError:
        return 0


class SelfCert:
    """One replica's part in keeping the serving certificate (see the module's doc)."""

    def __init__(
        self,
        api: ApiObjects,
        settings: Settings,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ):
        self.api, self.clock = api, clock
        self.policy = policy(settings)
        self.namespace, self.name = settings.pod_namespace, settings.cert_secret
        self.secrets = f"/api/v1/namespaces/{self.namespace}/secrets"
        self.secret_path = f"{self.secrets}/{self.name}"
        self.configs = [f"{ADMISSION}/mutatingwebhookconfigurations/{n}" for n in settings.cert_mutating_webhooks]
        self.configs += [f"{ADMISSION}/validatingwebhookconfigurations/{n}" for n in settings.cert_validating_webhooks]
        self.cert_file, self.key_file = settings.cert_file, settings.key_file
        self.check_seconds = settings.cert_check_seconds
        self.files_written = threading.Event()
        self._wake, self._stop = threading.Event(), threading.Event()
        self._trusted: list[list[x509.Certificate]] | None = None  # every webhook's CAs, as last seen
        self._threads: list[threading.Thread] = []

    # -- one round ------------------------------------------------------------------------------------------------
    def sync(self) -> rotation.Decision:
        """Read, decide, write the step, publish the bundle, write the leaf; returns the decision taken."""
        while True:
            try:
                return self._round()
            except Conflict as exc:
                log.info("certificate state changed under us (%s); reading again", exc)

    def _round(self) -> rotation.Decision:
        secret = self.api.get(self.secret_path)
        meta = (secret or {}).get("metadata") or {}
        material = rotation.read((secret or {}).get("data"), meta.get("annotations"))
        if material.problems:
            log.warning("Secret %s/%s: %s", self.namespace, self.name, "; ".join(material.problems))
        configs = {path: self.api.get(path) for path in self.configs}
        missing = [p.rsplit("/", 2)[-2:] for p, c in configs.items() if c is None]
        if missing:
            log.warning("webhook configurations not found (not installed yet?): %s", missing)
        published = max([_generation(c) for c in configs.values() if c is not None] + [0])
        now = self.clock()
        decision = rotation.decide(material, self.policy, now, self._visible(material, configs))
        if decision.step is rotation.Step.BOOTSTRAP:
            # Above any generation a webhook configuration carries, or it would never take the new bundle.
            material = replace(material, generation=max(material.generation, published))
        if decision.step is not rotation.Step.KEEP:
            trusted_before = tuple(
                {
                    ca.fingerprint(hashes.SHA256()): ca
                    for c in configs.values()
                    if c
                    for hook in _bundle_of(c)
                    for ca in hook
                }.values()
            )
            material = rotation.advance(material, decision, self.policy, now, trusted_before)
            self._write_secret(secret, material)
            log.info("certificates: %s (%s); CAs trusted: %s", decision.step.value, decision.reason, _ids(material))
        elif material.generation < published:
            # The Secret was reset or edited below what is published: renumber it (a stale read conflicts).
            material = replace(material, generation=published + 1)
            self._write_secret(secret, material)
        for path, config in configs.items():
            if config is not None:
                self._publish(path, config, material)
        self._write_files(material)
        self._trusted = [hooks for c in (self.api.get(p) for p in self.configs) if c for hooks in _bundle_of(c)]
        if any(c is None for c in configs.values()):
            self._trusted = None
        return decision

    @staticmethod
    def _visible(material: rotation.Material, configs: dict[str, dict[str, Any] | None]) -> bool:
        """Every webhook configuration carries exactly `material`'s bundle."""
        return all(c is not None and _carries(c, material) for c in configs.values())

    def _write_secret(self, secret: dict[str, Any] | None, material: rotation.Material) -> None:
        data, annotations = rotation.payload(material)
        if secret is None:
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/tls",
                "metadata": {
                    "name": self.name,
                    "namespace": self.namespace,
                    "labels": MANAGED_BY,
                    "annotations": annotations,
                },
                "data": data,
            }
            self.api.create(self.secrets, body)
            return
        meta = secret.setdefault("metadata", {})
        meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}
        for key in (rotation.NEXT_SINCE, rotation.RETIRED_SINCE):
            if key not in annotations:
                meta["annotations"].pop(key, None)
        secret["data"] = data
        if secret.get("type") not in (None, "kubernetes.io/tls", "Opaque"):
            log.warning(
                "Secret %s/%s has type %s; kvinject writes tls.crt/tls.key into it",
                self.namespace,
                self.name,
                secret.get("type"),
            )
        self.api.replace(self.secret_path, secret)

    def _publish(self, path: str, config: dict[str, Any], material: rotation.Material) -> None:
        """Write the bundle into every webhook of `config` unless it is there, or a newer one is (409: read again)."""
        want = base64.b64encode(material.bundle()).decode("ascii")
        for _ in range(10):
            if _generation(config) > material.generation:
                return  # a replica that read a newer Secret published; this round's Secret is old
            if _carries(config, material):
                return
            for hook in config.get("webhooks") or []:
                hook.setdefault("clientConfig", {})["caBundle"] = want
            meta = config.setdefault("metadata", {})
            meta["annotations"] = {**(meta.get("annotations") or {}), rotation.GENERATION: str(material.generation)}
            try:
                self.api.replace(path, config)
                log.info("published the caBundle (generation %d) to %s", material.generation, path.rsplit("/", 1)[-1])
                return
            except Conflict:
                fresh = self.api.get(path)
                if fresh is None:
                    return
                config = fresh
        raise Conflict(f"{path} kept changing")

    def _write_files(self, material: rotation.Material) -> None:
        leaf = material.leaf
        assert leaf is not None
        pem = leaf.cert_pem
        try:
            same = self.cert_file.read_bytes() == pem
        except OSError:
            same = False
        if not same:
            # Key first: a reloader that sees the new certificate must find its key already there.
            self.key_file.parent.mkdir(parents=True, exist_ok=True)
            self.cert_file.parent.mkdir(parents=True, exist_ok=True)
            certs.write_private_key(self.key_file, leaf.key)
            certs.write_file(self.cert_file, pem)
            log.info("serving certificate written to %s (expires %s)", self.cert_file, leaf.cert.not_valid_after_utc)
        self.files_written.set()

    # -- readiness ------------------------------------------------------------------------------------------------
    def not_ready(self, loaded: bytes | None) -> str | None:
        """Why this replica must not be sent admissions yet (None: it may): the certificate it serves (`loaded`,
        PEM) must be one that every webhook configuration's caBundle trusts."""
        if not loaded:
            return "serving certificate not loaded"
        trusted = self._trusted
        if trusted is None:
            return "caBundle not published yet"
        try:
            leaf = x509.load_pem_x509_certificate(loaded)
        except ValueError:
            return "serving certificate unreadable"
        if leaf.not_valid_after_utc <= self.clock():
            return "serving certificate expired"
        if not trusted or not all(any(rotation.signed_by(leaf, ca) for ca in hook) for hook in trusted):
            return "caBundle not published yet"
        return None

    # -- the threads ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        for target, name in ((self._loop, "selfcert"), (self._watch, "selfcert-watch")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _loop(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            self._wake.clear()
            try:
                decision = self.sync()
                backoff = 0.2
            except Exception as exc:  # the loop must outlive any one round (API errors, unexpected content)
                log.warning("certificate round failed (%s: %s); again in %.1fs", type(exc).__name__, exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.check_seconds)
                continue
            wait = self.check_seconds
            if decision.step is not rotation.Step.KEEP:
                wait = 0.0  # one step at a time: decide the next one on what was just written
            elif decision.recheck_at is not None:
                wait = min(wait, max((decision.recheck_at - self.clock()).total_seconds(), 0.05))
            self._wake.wait(wait)

    def _watch(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                for _ in self.api.watch(self.secrets, f"metadata.name={self.name}", self._stop):
                    self._wake.set()
                backoff = 0.2
            except ClusterError as exc:
                log.warning(
                    "watching Secret %s/%s failed (%s); again in %.1fs", self.namespace, self.name, exc, backoff
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)


def _ids(material: rotation.Material) -> str:
    return ", ".join(
        f"serial {c.serial_number:x} until {c.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}" for c in material.trusted()
    )
