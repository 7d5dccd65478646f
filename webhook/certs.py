"""A CA and a serving certificate for the webhook, made with `cryptography`."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Issued:
    ca_file: Path
    cert_file: Path
    key_file: Path

    @property
    def ca_bundle(self) -> str:
        return base64.b64encode(self.ca_file.read_bytes()).decode("ascii")


def service_names(service: str, namespace: str) -> list[str]:
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
        "localhost",
    ]


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, data: bytes, private: bool = False) -> None:
    """Write atomically so a reloading server never reads half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    if private:
        os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _load_ca(ca_cert: Path, ca_key: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    if not (ca_cert.exists() and ca_key.exists()):
        return None
    key = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    return x509.load_pem_x509_certificate(ca_cert.read_bytes()), key


def issue(
    out: Path,
    dns_names: list[str],
    ips: list[str] | None = None,
    days: int = 365,
    reuse_ca: bool = True,
    prefix: str = "tls",
) -> Issued:
    """Write ca.crt/ca.key (kept if present and `reuse_ca`) and <prefix>.crt/<prefix>.key under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    ca_cert_path, ca_key_path = out / "ca.crt", out / "ca.key"
    loaded = _load_ca(ca_cert_path, ca_key_path) if reuse_ca else None
    if loaded is None:
        loaded = certificate("kvinject CA", ca=True, days=days * 5)
        write_private_key(ca_key_path, loaded[1])
        _write(ca_cert_path, loaded[0].public_bytes(serialization.Encoding.PEM))
    cert, key = certificate(
        dns_names[0], issuer=loaded, dns_names=dns_names, ips=ips or ["127.0.0.1"], server=True, days=days
    )
    cert_path, key_path = out / f"{prefix}.crt", out / f"{prefix}.key"
    # Key first: a reloader that sees the new cert must find its key already there.
    write_private_key(key_path, key)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return Issued(ca_cert_path, cert_path, key_path)


def certificate(
    common_name: str,
    *,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    ca: bool = False,
    organizations: Sequence[str] = (),
    dns_names: Sequence[str] = (),
    ips: Sequence[str] = (),
    server: bool = False,
    client: bool = False,
    days: float = 365,
    now: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate and its new ECDSA P-256 key, self-signed unless `issuer` (a CA's certificate and key) signs it.

    A CA (`ca`) may sign certificates and CRLs at any depth; any certificate may sign (digital signature), with the
    extended key usages asked for (`server`, `client`) and the subject alternative names `dns_names` and `ips`.
    Valid from five minutes before `now` (default: the clock; the margin absorbs skew between clocks) for `days`,
    or until `not_after` when given (a leaf must not outlive the CA that signs it)."""
    key = _key()
    now = now or dt.datetime.now(dt.UTC)
    subject = x509.Name(
        [
            *(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    issuer_name, signing_key = (issuer[0].subject, issuer[1]) if issuer is not None else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(not_after or now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if ca:
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    if issuer is not None:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key())
        builder = builder.add_extension(aki, critical=False)
    usages = [
        oid
        for oid, wanted in ((ExtendedKeyUsageOID.SERVER_AUTH, server), (ExtendedKeyUsageOID.CLIENT_AUTH, client))
        if wanted
    ]
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(signing_key, hashes.SHA256()), key


def write_file(path: Path, data: bytes) -> Path:
    """`data` written atomically (a reloading server never reads half a file)."""
    _write(path, data)
    return path


def write_private_key(path: Path, key: PrivateKeyTypes) -> Path:
    """`key` as unencrypted PKCS#8 PEM, readable by its owner only, written atomically."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write(path, pem, private=True)
    return path


def write_certificate(out: Path, name: str, cert: x509.Certificate, key: PrivateKeyTypes) -> tuple[Path, Path]:
    """<name>.crt and <name>.key under `out` (the key first, as `issue` does); returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out / f"{name}.crt", out / f"{name}.key"
    write_private_key(key_path, key)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path
