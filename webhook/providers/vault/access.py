"""Where and as whom the init container reads HashiCorp Vault, from the environment `init_spec` gives it, and how
its failures read in the termination log."""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from webhook.names import VAULT_ROLE_NAME
from webhook.providers.reading import FailureKind, ObjectSpec, ReadError
from webhook.providers.vault.names import (
    ENV_ADDRESS,
    ENV_AUTH_MOUNT,
    ENV_CA_CERT,
    ENV_ROLE,
    ENV_TOKEN_FILE,
    PROVIDER_DEFAULT_AUTH_MOUNT,
)

# As the server's setting accepts it (webhook/settings.py): segments, no leading or trailing '/'.
_AUTH_MOUNT = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_./-]*[A-Za-z0-9])?$")


@dataclass(frozen=True)
class VaultAccess:
    """A Kubernetes-auth role on an auth mount of one Vault server, logging in with a ServiceAccount token."""

    address: str  # https://host[:port], no path, no trailing '/'
    role: str
    auth_mount: str = PROVIDER_DEFAULT_AUTH_MOUNT
    token_file: Path | None = None  # None: the caller holds the token in memory (live verification)
    ca_file: Path | None = None  # None: the image's public roots

    @property
    def principal(self) -> str:
        return self.role

    def tls_context(self) -> ssl.SSLContext:
        """Certificates and host names always verified; against VAULT_CACERT when given."""
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)

    def failure_reason(self, obj: ObjectSpec, error: ReadError, tried: str) -> str:
        """The termination-log reason: the reader's details name the role, the path and Vault's words already."""
        match error.kind:
            case FailureKind.DENIED | FailureKind.NOT_FOUND | FailureKind.TOKEN:
                return error.detail
            case FailureKind.TOKEN_UNREACHABLE | FailureKind.UNAVAILABLE:
                return f"{error.detail}{tried}"
            case FailureKind.UNREACHABLE:
                return f"Vault at {self.address} unreachable: {error.detail}{tried}"
            case FailureKind.TLS:
                return f"Vault at {self.address} unreachable: {error.detail}"
            case FailureKind.REJECTED:
                return f"Vault refused the read of {obj.vault}/{obj.name}: {error.detail}"
            case FailureKind.INVALID:
                return f"cannot use the object: {error.detail}"


def _address(raw: str) -> tuple[str, list[str]]:
    if not raw:
        return "", [f"{ENV_ADDRESS} is not set"]
    parts = urlsplit(raw.strip())
    if parts.scheme != "https" or not parts.hostname or parts.path.strip("/") or parts.query or parts.fragment:
        return "", [f"{ENV_ADDRESS} must be an https URL with no path, like https://vault.example:8200, not {raw!r}"]
    try:
        parts.port  # noqa: B018 -- raises on a port out of range
    except ValueError:
        return "", [f"{ENV_ADDRESS} {raw!r} has an invalid port"]
    return f"https://{parts.netloc}", []


def _ca_file(raw: str) -> tuple[Path | None, list[str]]:
    if not raw:
        return None, []
    path = Path(raw)
    if not path.is_file():
        return None, [f"{ENV_CA_CERT} {path} does not exist (is the CA ConfigMap mounted?)"]
    try:
        ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, OSError, ValueError):
        return None, [f"{ENV_CA_CERT} {path} holds no PEM certificate"]
    return path, []


def access_from_env(env: Mapping[str, str]) -> tuple[VaultAccess | None, list[str], list[str]]:
    """(access or None, identity problems, endpoint problems)."""
    identity: list[str] = []
    role = env.get(ENV_ROLE, "")
    if not role:
        identity.append(f"{ENV_ROLE} is not set")
    elif not VAULT_ROLE_NAME.match(role):
        identity.append(f"{ENV_ROLE} {role[:64]!r} is not a Vault role name")
    mount = (env.get(ENV_AUTH_MOUNT) or PROVIDER_DEFAULT_AUTH_MOUNT).strip("/")
    if not _AUTH_MOUNT.match(mount):
        identity.append(f"{ENV_AUTH_MOUNT} {mount[:64]!r} is not an auth mount path")
    token_file = Path(env.get(ENV_TOKEN_FILE, ""))
    if not env.get(ENV_TOKEN_FILE):
        identity.append(f"{ENV_TOKEN_FILE} is not set")
    elif not token_file.is_file():
        identity.append(f"{ENV_TOKEN_FILE} {token_file} does not exist (is the projected token volume mounted?)")
    address, endpoint = _address(env.get(ENV_ADDRESS, ""))
    ca_file, more = _ca_file(env.get(ENV_CA_CERT, ""))
    endpoint += more
    if identity or endpoint:
        return None, identity, endpoint
    return VaultAccess(address, role, mount, token_file, ca_file), [], []
