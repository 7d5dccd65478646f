"""The Vault harness against the real Vault and the real control plane: what a pod's ServiceAccount sees.

A role binds ServiceAccount `payments` of one namespace to a policy reading secret/payments/*; `intruder` beside it
is bound to nothing. Logins go through Vault's Kubernetes auth (a real TokenReview on the apiserver), reads and
capability checks through hvac over TLS trusting only the Vault CA. The bodies asserted are Vault's own.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import hvac
import pytest
import requests
from hvac.exceptions import Forbidden, InvalidPath, InvalidRequest

from tests.harness import ControlPlane
from tests.harness.vault import AUDIENCE, VaultRole, VaultServer, error_body, kv_data_path, read_policy

ROLE = "payments"
GRANTED = "payments/db"
NOT_GRANTED = "billing/api"
PERMISSION_DENIED = {"errors": ["1 error occurred:\n\t* permission denied\n\n"]}


@dataclass(frozen=True)
class Seeded:
    namespace: str
    other_namespace: str
    password: str  # the seeded value of GRANTED#password, compared, never printed


@pytest.fixture(scope="module")
def seeded(vault: VaultServer, control_plane: ControlPlane) -> Iterator[Seeded]:
    """Two secrets, a read policy on payments/*, role `payments` bound to payments in a fresh namespace; the same
    ServiceAccount name in another namespace and an unbound `intruder`."""
    namespace, other = f"vault-{uuid.uuid4().hex[:8]}", f"vault-other-{uuid.uuid4().hex[:8]}"
    for ns in (namespace, other):
        control_plane.kubectl("create", "namespace", ns)
    control_plane.kubectl("create", "serviceaccount", "payments", "-n", namespace)
    control_plane.kubectl("create", "serviceaccount", "intruder", "-n", namespace)
    control_plane.kubectl("create", "serviceaccount", "payments", "-n", other)
    password = secrets.token_urlsafe(16)
    vault.put_secret(GRANTED, {"password": password})
    vault.put_secret(NOT_GRANTED, {"token": secrets.token_urlsafe(16)})
    vault.write_policy("payments-read", read_policy("secret", "payments/*"))
    vault.write_role(VaultRole(ROLE, ["payments"], [namespace], ["payments-read"]))
    yield Seeded(namespace, other, password)
    for ns in (namespace, other):
        control_plane.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def login_as(
    vault: VaultServer, cp: ControlPlane, namespace: str, name: str, audience: str | None = AUDIENCE
) -> hvac.Client:
    return vault.login(vault.service_account_token(cp, namespace, name, audience=audience), ROLE)


def test_a_bound_service_account_reads_the_seeded_key(
    vault: VaultServer, control_plane: ControlPlane, seeded: Seeded
) -> None:
    client = login_as(vault, control_plane, seeded.namespace, "payments")
    value = vault.read_key(client, GRANTED, "password")
    assert secrets.compare_digest(value, seeded.password), "the value read differs from the one seeded"


def test_a_path_the_policy_does_not_grant_is_forbidden_with_vaults_body(
    vault: VaultServer, control_plane: ControlPlane, seeded: Seeded
) -> None:
    client = login_as(vault, control_plane, seeded.namespace, "payments")
    with pytest.raises(Forbidden) as denied:
        vault.read_key(client, NOT_GRANTED, "token")
    assert error_body(denied.value) == PERMISSION_DENIED


def test_a_granted_path_with_no_secret_is_not_found_with_an_empty_error_list(
    vault: VaultServer, control_plane: ControlPlane, seeded: Seeded
) -> None:
    client = login_as(vault, control_plane, seeded.namespace, "payments")
    with pytest.raises(InvalidPath) as missing:
        vault.read_key(client, "payments/missing", "password")
    assert error_body(missing.value) == {"errors": []}


# Who logs in as role `payments`, and Vault's refusal (status class, body).
BAD_AUDIENCE = "invalid audience (aud) claim: audience claim does not match any expected audience"
LOGIN_DENIALS = {
    "service-account-not-bound": ("ns", "intruder", AUDIENCE, Forbidden, "service account name not authorized"),
    "namespace-not-bound": ("other", "payments", AUDIENCE, Forbidden, "namespace not authorized"),
    "apiserver-audience": ("ns", "payments", None, Forbidden, BAD_AUDIENCE),  # kubectl create token's default
    "other-audience": ("ns", "payments", "not-vault", Forbidden, BAD_AUDIENCE),
}


@pytest.mark.parametrize("case", LOGIN_DENIALS.values(), ids=LOGIN_DENIALS.keys())
def test_a_login_outside_the_role_is_refused_with_vaults_error(
    vault: VaultServer,
    control_plane: ControlPlane,
    seeded: Seeded,
    case: tuple[str, str, str | None, type[Exception], str],
) -> None:
    where, name, audience, refusal, message = case
    namespace = seeded.namespace if where == "ns" else seeded.other_namespace
    with pytest.raises(refusal) as refused:
        login_as(vault, control_plane, namespace, name, audience)
    assert error_body(refused.value) == {"errors": [message]}


def test_an_unknown_role_is_refused(vault: VaultServer, control_plane: ControlPlane, seeded: Seeded) -> None:
    jwt = vault.service_account_token(control_plane, seeded.namespace, "payments")
    with pytest.raises(InvalidRequest) as refused:
        vault.login(jwt, "no-such-role")
    assert error_body(refused.value) == {"errors": ['invalid role name "no-such-role"']}


@pytest.mark.parametrize(
    ("path", "expected"),
    [(GRANTED, ["read"]), (NOT_GRANTED, ["deny"]), ("payments/other", ["read"])],
    ids=["granted", "not-granted", "granted-by-glob-not-seeded"],
)
def test_capabilities_self_proves_read_without_reading(
    vault: VaultServer, control_plane: ControlPlane, seeded: Seeded, path: str, expected: list[str]
) -> None:
    client = login_as(vault, control_plane, seeded.namespace, "payments")
    api_path = kv_data_path("secret", path)
    assert vault.capabilities_self(client, [api_path]) == {api_path: expected}


def test_capabilities_self_answers_several_paths_at_once(
    vault: VaultServer, control_plane: ControlPlane, seeded: Seeded
) -> None:
    client = login_as(vault, control_plane, seeded.namespace, "payments")
    granted, refused = kv_data_path("secret", GRANTED), kv_data_path("secret", NOT_GRANTED)
    answer = client.sys.get_capabilities([granted, refused])
    assert answer[granted] == ["read"] and answer[refused] == ["deny"]
    assert "capabilities" not in answer  # only a single path gets the top-level key


def test_only_the_vault_ca_is_trusted(vault: VaultServer) -> None:
    """The server's certificate comes from its own CA: the system bundle (REQUESTS_CA_BUNDLE) does not verify it."""
    assert vault.health() == 200
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{vault.url}/v1/sys/health", verify=True, timeout=5)


def test_a_stopped_vault_refuses_connections_and_a_restart_unseals_it(
    vault: VaultServer, control_plane: ControlPlane, seeded: Seeded
) -> None:
    jwt = vault.service_account_token(control_plane, seeded.namespace, "payments")
    vault.stop()
    try:
        with pytest.raises(requests.exceptions.ConnectionError) as down:
            vault.login(jwt, ROLE)
        assert _caused_by(down.value, ConnectionRefusedError)
    finally:
        vault.start()
    client = vault.login(jwt, ROLE)  # file storage: the same role, policy and secret after the restart
    assert secrets.compare_digest(vault.read_key(client, GRANTED, "password"), seeded.password)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether `kind` is among the errors behind `exc`: causes, contexts, urllib3's `reason`, exception args."""
    todo, seen = [exc], set()
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, kind):
            return True
        linked = [e.__cause__, e.__context__, getattr(e, "reason", None), *e.args]
        todo += [x for x in linked if isinstance(x, BaseException)]
    return False
