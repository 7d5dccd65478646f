"""The live-verification overlay's ValidatingAdmissionPolicy on the real apiserver: kvinject's ServiceAccount may
mint only the tokens live verification needs, although its ClusterRole lets it create any TokenRequest anywhere.

Admission policies do apply to the serviceaccounts/token subresource: the object they see is the
authentication.k8s.io/v1 TokenRequest, after the API filled in the defaults (no audience becomes the apiserver's
audience, no lifetime 3600 s). Requests are made with `kubectl create token` through impersonation (`--as`)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest
import yaml

from tests.harness import MANIFESTS, ControlPlane, KvinjectServer, apply_docs, pick, rendered_manifests, wait_for
from webhook.providers.azure.names import TOKEN_AUDIENCE
from webhook.settings import Settings

POLICY = "kvinject-token-requests"
DENIED = f"ValidatingAdmissionPolicy '{POLICY}' with binding '{POLICY}' denied request: "
AUDIENCE = TOKEN_AUDIENCE
VAULT_AUDIENCE = Settings().hashicorp_vault_audience
KVINJECT = "system:serviceaccount:kvinject:kvinject"
OTHER = "token-minter"  # a user holding the very same ClusterRole
AUDIENCES = (
    'kvinject may only request tokens whose audiences are exactly ["api://AzureADTokenExchange"] (Azure) or ["vault"]'
    " (HashiCorp Vault)"
)
LIFETIME = "kvinject may only request tokens that expire within 600 seconds"
BOUND = "kvinject may only request tokens bound to no object"
BOUND_TO_SECRET = ["--bound-object-kind", "Secret", "--bound-object-name", "api-token", "--bound-object-uid", "0" * 8]
NAMESPACES = (
    "kvinject may not request tokens for ServiceAccounts of kube-system, kube-public, kube-node-lease or kvinject"
)


def create_token(
    cp: ControlPlane, user: str, namespace: str, account: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """`kubectl create token` (its output, a token, is never printed by these tests)."""
    return cp.kubectl("create", "token", account, "-n", namespace, *args, f"--as={user}", check=False)


def minted(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode == 0 and result.stdout.count(".") == 2


@pytest.fixture(scope="module")
def tenant(control_plane: ControlPlane, kvinject: KvinjectServer) -> Iterator[str]:
    """The overlay's ClusterRole and token policy applied (the base is already), a tenant namespace with a
    ServiceAccount `api`, and another user bound to kvinject's ClusterRole; the base is restored afterwards."""
    cp = control_plane
    overlay = [
        d
        for d in yaml.safe_load_all(cp.kubectl("kustomize", str(MANIFESTS / "overlays" / "live-verification")).stdout)
        if d
    ]
    policy = [
        d
        for d in pick(overlay, "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
        if d["metadata"]["name"] == POLICY
    ]
    assert len(policy) == 2
    apply_docs(cp, pick(overlay, "ClusterRole") + policy)
    cp.kubectl("create", "clusterrolebinding", OTHER, "--clusterrole=kvinject", f"--user={OTHER}")
    ns = f"tokens-{uuid.uuid4().hex[:6]}"
    cp.kubectl("create", "namespace", ns)
    cp.kubectl("create", "serviceaccount", "api", "-n", ns)
    # Policies and RBAC load asynchronously. TokenRequest has no dry run (dryRun=All still returns a signed
    # token), so probe with a request the policy refuses; until then it mints a useless token, dropped unread.
    wait_for(
        lambda: (
            DENIED + AUDIENCES
            in create_token(cp, KVINJECT, ns, "api", "--audience", "probe", "--duration", "600s").stderr
        ),
        f"ValidatingAdmissionPolicy {POLICY} to take effect",
    )
    wait_for(lambda: minted(create_token(cp, OTHER, ns, "api", "--duration", "600s")), f"{OTHER}'s ClusterRoleBinding")
    yield ns
    cp.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    cp.kubectl("delete", "clusterrolebinding", OTHER, check=False)
    for doc in policy:
        cp.kubectl("delete", doc["kind"].lower(), POLICY, check=False)
    apply_docs(cp, pick(rendered_manifests(cp), "ClusterRole"))


@pytest.mark.parametrize("audience", [AUDIENCE, VAULT_AUDIENCE], ids=["azure", "vault"])
def test_kvinject_mints_what_live_verification_asks_for(
    control_plane: ControlPlane, tenant: str, audience: str
) -> None:
    # webhook/providers/*/verify.py: Entra's audience or Vault's (the setting's default), 600 s, no bound object.
    result = create_token(control_plane, KVINJECT, tenant, "api", "--audience", audience, "--duration", "600s")
    assert minted(result), result.stderr


@pytest.mark.parametrize(
    ("namespace", "account", "args", "message"),
    [
        (None, "api", ["--audience", "api://other", "--duration", "600s"], AUDIENCES),
        (None, "api", ["--duration", "600s"], AUDIENCES),  # the API fills in its own audience
        (None, "api", ["--audience", AUDIENCE, "--audience", "api://other", "--duration", "600s"], AUDIENCES),
        (None, "api", ["--audience", AUDIENCE, "--audience", VAULT_AUDIENCE, "--duration", "600s"], AUDIENCES),
        (None, "api", ["--audience", AUDIENCE, "--duration", "3600s"], LIFETIME),
        (None, "api", ["--audience", AUDIENCE], LIFETIME),  # the API's default lifetime: one hour
        (
            None,
            "api",
            ["--audience", AUDIENCE, "--duration", "600s", *BOUND_TO_SECRET],
            BOUND,
        ),
        ("kube-system", "default", ["--audience", AUDIENCE, "--duration", "600s"], NAMESPACES),
        ("kube-public", "default", ["--audience", AUDIENCE, "--duration", "600s"], NAMESPACES),
        ("kube-node-lease", "default", ["--audience", AUDIENCE, "--duration", "600s"], NAMESPACES),
        ("kvinject", "kvinject", ["--audience", AUDIENCE, "--duration", "600s"], NAMESPACES),
    ],
    ids=[
        "other-audience",
        "no-audience",
        "extra-audience",
        "both-audiences",
        "one-hour",
        "default-lifetime",
        "bound-object",
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "kvinject",
    ],
)
def test_kvinject_is_refused_any_other_token(
    control_plane: ControlPlane, tenant: str, namespace: str | None, account: str, args: list[str], message: str
) -> None:
    result = create_token(control_plane, KVINJECT, namespace or tenant, account, *args)
    assert result.returncode != 0 and not result.stdout
    assert DENIED + message in result.stderr, result.stderr


def test_the_policy_targets_kvinject_only(control_plane: ControlPlane, tenant: str) -> None:
    cp = control_plane
    for namespace, account in ((tenant, "api"), ("kube-system", "default")):
        result = create_token(cp, OTHER, namespace, account, "--audience", "api://other", "--duration", "3600s")
        assert minted(result), result.stderr
