"""Certificates for the harness, on webhook/certs.py: loopback serving certificates, the control plane's CA."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from webhook import certs


def loopback(directory: Path, *dns_names: str) -> certs.Issued:
    """ca.crt/ca.key and tls.crt/tls.key under `directory`: a server certificate for 127.0.0.1 (and `dns_names`,
    default localhost), from the CA already there or a new one."""
    return certs.issue(directory, list(dns_names or ["localhost"]), ips=["127.0.0.1"])


def bundle(path: Path, *ca_files: Path) -> Path:
    """One PEM file trusting every CA in `ca_files` (for REQUESTS_CA_BUNDLE)."""
    path.write_bytes(b"".join(f.read_bytes() for f in ca_files))
    return path


def trust(ca_file: Path) -> ssl.SSLContext:
    """A client TLS context trusting only `ca_file`."""
    return ssl.create_default_context(cafile=str(ca_file))


def served_certificate(port: int, ca_file: Path, host: str = "127.0.0.1") -> x509.Certificate:
    """The certificate a TLS server on `host`:`port` presents, verified against `ca_file`."""
    with (
        socket.create_connection((host, port), timeout=5) as raw,
        trust(ca_file).wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


class ServesTls:
    """A server presenting a certificate of its own CA (`issued`): what its clients need to trust it."""

    issued: certs.Issued

    @property
    def ca_file(self) -> Path:
        return self.issued.ca_file

    @property
    def ca_bundle(self) -> str:
        """The CA, base64-encoded PEM (a webhook configuration's caBundle)."""
        return self.issued.ca_bundle

    def trust(self) -> ssl.SSLContext:
        return trust(self.issued.ca_file)


class PKI:
    """A throwaway CA in ``directory`` (ca.crt, ca.key) that issues server and client certificates."""

    def __init__(self, directory: Path, ca_common_name: str = "kvinject-e2e-ca", days: int = 30) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.days = days
        self._ca = certs.certificate(ca_common_name, ca=True, days=days)
        self.ca_cert, self.ca_key = certs.write_certificate(self.dir, "ca", *self._ca)

    @property
    def ca_pem(self) -> bytes:
        return self.ca_cert.read_bytes()

    def issue(
        self,
        name: str,
        common_name: str,
        *,
        organizations: Sequence[str] = (),
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
        server: bool = False,
        client: bool = False,
        days: int | None = None,
    ) -> tuple[Path, Path]:
        """Issue <name>.crt/<name>.key signed by the CA; returns (cert_path, key_path)."""
        if not (server or client):
            raise ValueError("a certificate needs server=True and/or client=True")
        issued = certs.certificate(
            common_name,
            issuer=self._ca,
            organizations=organizations,
            dns_names=dns_names,
            ips=ip_addresses,
            server=server,
            client=client,
            days=days or self.days,
        )
        return certs.write_certificate(self.dir, name, *issued)

    def service_account_keys(self, name: str = "sa") -> tuple[Path, Path]:
        """An RSA key pair for signing ServiceAccount tokens; returns (private, public)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pub = self.dir / f"{name}.pub"
        pub.write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        return certs.write_private_key(self.dir / f"{name}.key", key), pub
