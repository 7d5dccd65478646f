"""What kvinject's own certificate authority should do next (cert_mode self): a pure planner, no I/O.

The state lives in one Secret that every replica reads (`Material`). Given it, the time and whether the
current trust bundle is visible in every webhook configuration, `decide` names the one next step and
`advance` performs it (issuing with `webhook.certs`). The timeline of a CA rotation, with an overlap so that
the apiserver always trusts the leaf any replica serves:

1. the active CA nears its end: a next CA is made and ADDED to the bundle (old + new trusted);
2. once that bundle is visible everywhere and `propagation` has passed (the apiserver's informer, every
   replica), the next CA becomes active and signs a new leaf; the old CA is kept in the bundle as retired;
3. `propagation` later (every replica serves the new leaf), the retired CA is dropped.

A new CA made from nothing (no Secret, or one kvinject cannot use) keeps whatever CAs the webhook configurations
trusted until then as retired, for one `propagation`: an upgrade from a Secret made by hand, or a garbled Secret,
does not cut off the replicas still serving the old leaf.

A leaf is renewed from the active CA by itself (the bundle does not change). The bundle's `generation`
grows whenever the set of trusted CAs changes, so that a replica reading an older Secret never
overwrites a newer bundle (see `webhook.selfcert`).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from webhook import certs

# Keys of the Secret (a kubernetes.io/tls Secret: tls.crt/tls.key are what any TLS tooling expects).
LEAF_CERT, LEAF_KEY = "tls.crt", "tls.key"
CA_CERT, CA_KEY = "ca.crt", "ca.key"
NEXT_CERT, NEXT_KEY = "next-ca.crt", "next-ca.key"
RETIRED_CERT = "retired-ca.crt"
# Annotations (timestamps are not secret, and show in `kubectl describe`).
GENERATION = "kvinject.io/ca-generation"
NEXT_SINCE = "kvinject.io/next-ca-since"
RETIRED_SINCE = "kvinject.io/retired-ca-since"

CA_NAME = "kvinject CA"


@dataclass(frozen=True)
class Pair:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


@dataclass(frozen=True)
class Material:
    """What the Secret holds, as far as it could be read (unreadable parts are None and named in `problems`)."""

    ca: Pair | None = None
    leaf: Pair | None = None
    next_ca: Pair | None = None
    retired: tuple[x509.Certificate, ...] = ()  # CAs still trusted for the leaves some replica may still serve
    next_since: dt.datetime | None = None
    retired_since: dt.datetime | None = None
    generation: int = 0
    problems: tuple[str, ...] = ()

    def trusted(self) -> list[x509.Certificate]:
        """The CAs the webhook configurations must trust now, in one order every replica computes alike."""
        cas = [p.cert for p in (self.ca, self.next_ca) if p is not None]
        cas += self.retired
        unique = {c.fingerprint(hashes.SHA256()): c for c in cas}
        return sorted(unique.values(), key=lambda c: (c.not_valid_before_utc, c.serial_number))

    def bundle(self) -> bytes:
        """The caBundle: PEM of every trusted CA."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.trusted())


@dataclass(frozen=True)
class Policy:
    """Lifetimes and the names the leaf must carry (settings decide them; tests use seconds)."""

    dns_names: tuple[str, ...]
    ips: tuple[str, ...] = ()
    ca_lifetime: dt.timedelta = dt.timedelta(days=730)
    ca_renew_before: dt.timedelta = dt.timedelta(days=90)
    leaf_lifetime: dt.timedelta = dt.timedelta(days=90)
    leaf_renew_before: dt.timedelta = dt.timedelta(days=30)
    # How long after a bundle change is visible before the next step relies on it (apiserver and replicas).
    propagation: dt.timedelta = dt.timedelta(minutes=2)
    # A timestamp written by another replica may be this far in our future (clock skew) and still be waited on;
    # further, it is taken as unusable and written anew.
    skew: dt.timedelta = dt.timedelta(minutes=5)


class Step(enum.Enum):
    KEEP = "keep"
    BOOTSTRAP = "bootstrap"  # no usable CA: a new CA and leaf (and bundle)
    RENEW_LEAF = "renew-leaf"  # a new leaf from the active CA; the bundle stays
    ADD_CA = "add-ca"  # a next CA joins the bundle
    PROMOTE = "promote"  # the next CA signs a new leaf; the active one retires (still trusted)
    DROP_CA = "drop-ca"  # the retired CAs leave the bundle
    RESTAMP = "restamp"  # a timestamp unusable (far in the future, or missing): set it to now


@dataclass(frozen=True)
class Decision:
    step: Step
    reason: str
    # When KEEP: the next moment the answer may change by time alone (the caller re-plans then at the latest).
    recheck_at: dt.datetime | None = None
    changes_bundle: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "changes_bundle", self.step in (Step.BOOTSTRAP, Step.ADD_CA, Step.DROP_CA))


# -- reading the Secret ---------------------------------------------------------------------------------------


def _decode(data: Mapping[str, str], key: str, problems: list[str]) -> bytes | None:
    value = data.get(key)
    if value is None:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        problems.append(f"{key}: not base64")
        return None


def _cert(data: Mapping[str, str], key: str, problems: list[str]) -> x509.Certificate | None:
    raw = _decode(data, key, problems)
    if raw is None:
        return None
    try:
        return x509.load_pem_x509_certificate(raw)
    except ValueError:
        problems.append(f"{key}: not a PEM certificate")
        return None


def _certs(data: Mapping[str, str], key: str, problems: list[str]) -> tuple[x509.Certificate, ...]:
    raw = _decode(data, key, problems)
    if raw is None:
        return ()
    try:
        return tuple(x509.load_pem_x509_certificates(raw))
    except ValueError:
        problems.append(f"{key}: not PEM certificates")
        return ()


def _pair(data: Mapping[str, str], cert_key: str, key_key: str, problems: list[str]) -> Pair | None:
    cert = _cert(data, cert_key, problems)
    raw = _decode(data, key_key, problems)
    if cert is None or raw is None:
        if (cert is None) != (raw is None):
            problems.append(f"{cert_key}/{key_key}: one without the other")
        return None
    try:
        key = serialization.load_pem_private_key(raw, password=None)
    except (ValueError, TypeError):
        problems.append(f"{key_key}: not a PEM private key")
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        problems.append(f"{key_key}: not the key of {cert_key}")
        return None
    return Pair(cert, key)


def _time(annotations: Mapping[str, str], key: str, problems: list[str]) -> dt.datetime | None:
    value = annotations.get(key)
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        problems.append(f"{key}: not a timestamp")
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def read(data: Mapping[str, str] | None, annotations: Mapping[str, str] | None) -> Material:
    """The Secret's `data` (base64 values) and annotations as Material; never raises on foreign or garbage content."""
    data, annotations = data or {}, annotations or {}
    problems: list[str] = []
    try:
        generation = max(int(annotations.get(GENERATION, "0")), 0)
    except ValueError:
        problems.append(f"{GENERATION}: not a number")
        generation = 0
    return Material(
        ca=_pair(data, CA_CERT, CA_KEY, problems),
        leaf=_pair(data, LEAF_CERT, LEAF_KEY, problems),
        next_ca=_pair(data, NEXT_CERT, NEXT_KEY, problems),
        retired=_certs(data, RETIRED_CERT, problems),
        next_since=_time(annotations, NEXT_SINCE, problems),
        retired_since=_time(annotations, RETIRED_SINCE, problems),
        generation=generation,
        problems=tuple(problems),
    )


def payload(material: Material) -> tuple[dict[str, str], dict[str, str]]:
    """The Secret's data (base64) and kvinject's annotations for `material` (absent parts are left out)."""

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode("ascii")

    data: dict[str, str] = {}
    for cert_key, key_key, pair in (
        (CA_CERT, CA_KEY, material.ca),
        (LEAF_CERT, LEAF_KEY, material.leaf),
        (NEXT_CERT, NEXT_KEY, material.next_ca),
    ):
        if pair is not None:
            data[cert_key], data[key_key] = b64(pair.cert_pem), b64(pair.key_pem)
    if material.retired:
        data[RETIRED_CERT] = b64(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in material.retired))
    annotations = {GENERATION: str(material.generation)}
    if material.next_since is not None:
        annotations[NEXT_SINCE] = material.next_since.isoformat()
    if material.retired_since is not None:
        annotations[RETIRED_SINCE] = material.retired_since.isoformat()
    return data, annotations


# -- judging certificates ---------------------------------------------------------------------------------------


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _names(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set(), set()
    return set(san.get_values_for_type(x509.DNSName)), {str(i) for i in san.get_values_for_type(x509.IPAddress)}


def _ca_problem(pair: Pair | x509.Certificate | None, policy: Policy, now: dt.datetime) -> str | None:
    if pair is None:
        return "no CA"
    cert = pair.cert if isinstance(pair, Pair) else pair
    if not _is_ca(cert):
        return "the CA certificate is not a CA"
    # Issued by a replica whose clock is ahead: usable within the skew allowed (certificates start 5 min early).
    if cert.not_valid_before_utc > now + policy.skew:
        return "the CA is not valid yet"
    if cert.not_valid_after_utc <= now:
        return "the CA has expired"
    return None


def _leaf_problem(material: Material, policy: Policy, now: dt.datetime) -> str | None:
    """Why the leaf cannot be served as it is (None: it can)."""
    leaf, ca = material.leaf, material.ca
    assert ca is not None
    if leaf is None:
        return "no serving certificate"
    if not signed_by(leaf.cert, ca.cert):
        return "the serving certificate is not signed by the active CA"
    if _names(leaf.cert) != (set(policy.dns_names), {str(ipaddress.ip_address(i)) for i in policy.ips}):
        return "the serving certificate's names differ from the wanted ones"
    if leaf.cert.not_valid_before_utc > now + policy.skew:
        return "the serving certificate is not valid yet"
    if leaf.cert.not_valid_after_utc <= now:
        return "the serving certificate has expired"
    return None


def _since_problem(since: dt.datetime | None, policy: Policy, now: dt.datetime) -> bool:
    return since is None or since > now + policy.skew


# -- deciding ----------------------------------------------------------------------------------------------------


def decide(material: Material, policy: Policy, now: dt.datetime, bundle_visible: bool) -> Decision:
    """The one next step for `material` at `now`; `bundle_visible`: every webhook configuration carries
    `material.bundle()` (at `material.generation` or later)."""
    problem = _ca_problem(material.ca, policy, now)
    if problem is not None:
        return Decision(Step.BOOTSTRAP, problem)
    assert material.ca is not None
    problem = _leaf_problem(material, policy, now)
    if problem is not None:
        return Decision(Step.RENEW_LEAF, problem)
    assert material.leaf is not None
    waits: list[dt.datetime] = []

    if material.retired:
        if _since_problem(material.retired_since, policy, now):
            return Decision(Step.RESTAMP, "the retired CA's timestamp is missing or far in the future")
        assert material.retired_since is not None
        due = material.retired_since + policy.propagation
        if now >= due:
            return Decision(Step.DROP_CA, "every replica has had time to serve the new leaf")
        waits.append(due)

    if material.next_ca is not None:
        problem = _ca_problem(material.next_ca, policy, now)
        if problem is not None:
            return Decision(Step.ADD_CA, f"the next CA is unusable ({problem})")
        if _since_problem(material.next_since, policy, now):
            return Decision(Step.RESTAMP, "the next CA's timestamp is missing or far in the future")
        assert material.next_since is not None
        due = material.next_since + policy.propagation
        if bundle_visible and now >= due and not material.retired:
            return Decision(Step.PROMOTE, "the next CA has been trusted long enough")
        if now < due:
            waits.append(due)

    leaf_due = material.leaf.cert.not_valid_after_utc - policy.leaf_renew_before
    # A leaf capped by its CA's end gains nothing from renewal under that CA: the CA rotation renews it.
    capped = material.leaf.cert.not_valid_after_utc >= material.ca.cert.not_valid_after_utc
    if now >= leaf_due and not capped:
        return Decision(Step.RENEW_LEAF, "the serving certificate nears its end")
    if not capped:
        waits.append(leaf_due)

    ca_due = material.ca.cert.not_valid_after_utc - policy.ca_renew_before
    if material.next_ca is None and not material.retired:
        if now >= ca_due:
            return Decision(Step.ADD_CA, "the CA nears its end")
        waits.append(ca_due)
    return Decision(Step.KEEP, "nothing to do", min(waits) if waits else None)


def _new_ca(policy: Policy, now: dt.datetime) -> Pair:
    cert, key = certs.certificate(CA_NAME, ca=True, days=policy.ca_lifetime / dt.timedelta(days=1), now=now)
    return Pair(cert, key)


def _new_leaf(ca: Pair, policy: Policy, now: dt.datetime) -> Pair:
    cert, key = certs.certificate(
        policy.dns_names[0],
        issuer=(ca.cert, ca.key),
        dns_names=policy.dns_names,
        ips=policy.ips,
        server=True,
        now=now,
        not_after=min(now + policy.leaf_lifetime, ca.cert.not_valid_after_utc),
    )
    return Pair(cert, key)


def advance(
    material: Material,
    decision: Decision,
    policy: Policy,
    now: dt.datetime,
    trusted_before: tuple[x509.Certificate, ...] = (),
) -> Material:
    """`material` after `decision`'s step (new keys and certificates are issued here). `trusted_before`: the CAs
    the webhook configurations trust now, kept as retired when a new CA is made from nothing."""
    step, m = decision.step, replace(material, problems=())
    if step is Step.KEEP:
        return material
    if step is Step.BOOTSTRAP:
        ca = _new_ca(policy, now)
        keep = tuple(c for c in trusted_before if _ca_problem(c, policy, now) is None)
        return Material(
            ca=ca,
            leaf=_new_leaf(ca, policy, now),
            retired=keep,
            retired_since=now if keep else None,
            generation=material.generation + 1,
        )
    assert m.ca is not None
    if step is Step.RENEW_LEAF:
        return replace(m, leaf=_new_leaf(m.ca, policy, now))
    if step is Step.ADD_CA:
        return replace(m, next_ca=_new_ca(policy, now), next_since=now, generation=m.generation + 1)
    if step is Step.PROMOTE:
        assert m.next_ca is not None
        return replace(
            m,
            ca=m.next_ca,
            leaf=_new_leaf(m.next_ca, policy, now),
            next_ca=None,
            next_since=None,
            retired=(m.ca.cert,),
            retired_since=now,
        )
    if step is Step.DROP_CA:
        return replace(m, retired=(), retired_since=None, generation=m.generation + 1)
    assert step is Step.RESTAMP
    return replace(
        m,
        next_since=now if m.next_ca is not None and _since_problem(m.next_since, policy, now) else m.next_since,
        retired_since=(now if m.retired and _since_problem(m.retired_since, policy, now) else m.retired_since),
    )
