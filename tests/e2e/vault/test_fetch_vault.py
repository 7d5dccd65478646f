"""`kvinject fetch` against the real Vault: a real process logging in through Vault's Kubernetes auth with a real
ServiceAccount token (TokenRequest on the e2e control plane, audience `vault`), reading KV v2 over TLS that trusts
only the Vault CA.

The init container's environment is the one the webhook gives it: the objects from a pod's annotations through
the contract and the plan, the rest from the Vault provider's init_spec (only the token and CA paths, which are
files of the projected volume in a pod, point at the test's files). A file audit device on Vault records what
each run asked (who logged in, which paths were read, the token revoked), so the tests see the calls themselves.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fetch.test_fetch_without_serve import ABSENT
from tests.fetch.test_fetch_without_serve import kvinject as kvinject_without_serve
from tests.harness import ROOT, ControlPlane, hygiene
from tests.harness.vault import KV_MOUNT, VaultRole, VaultServer, read_policy
from webhook import contract, plan, providers
from webhook.identity import Identity
from webhook.names import STORE_VAULT
from webhook.providers.vault.names import ENV_CA_CERT, ENV_TOKEN_FILE
from webhook.settings import Settings

pytestmark = pytest.mark.e2e  # a real Vault and a real apiserver's tokens

BOUND, UNBOUND = "api", "intruder"  # ServiceAccounts: bound to the role, and not


@dataclass(frozen=True)
class Setup:
    namespace: str
    role: str
    prefix: str  # every path of this module lives under secret/<prefix>/
    values: dict[str, str]  # seeded values, compared and searched for in outputs, never printed
    audit_log: Path

    def ref(self, path: str, key: str) -> str:
        return f"{KV_MOUNT}/{self.prefix}/{path}#{key}"

    def secret(self, path: str) -> str:
        return f"{KV_MOUNT}/{self.prefix}/{path}"

    def data(self, path: str) -> str:
        """The API path Vault's audit log names."""
        return f"{KV_MOUNT}/data/{self.prefix}/{path}"


@pytest.fixture(scope="module")
def setup(vault: VaultServer, control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """payments/db {password, username} and payments/api {token} readable by the role (policy payments/*),
    billing/api {token} not; the role binds ServiceAccount `api` of a fresh namespace, `intruder` is unbound."""
    suffix = uuid.uuid4().hex[:8]
    namespace, role, prefix = f"fetch-vault-{suffix}", f"fetch-{suffix}", f"fetch-{suffix}"
    control_plane.kubectl("create", "namespace", namespace)
    for account in (BOUND, UNBOUND):
        control_plane.kubectl("create", "serviceaccount", account, "-n", namespace)
    values = {name: f"{name}-{secrets.token_urlsafe(12)}" for name in ("password", "username", "api", "billing")}
    values["password"] += " \u00e9\u00e8 \n"  # bytes beyond ASCII, and a trailing newline, kept exactly
    hygiene.remember(*values.values())  # the session's scans of kvinject's logs look for them too
    vault.put_secret(f"{prefix}/payments/db", {"password": values["password"], "username": values["username"]})
    vault.put_secret(f"{prefix}/payments/api", {"token": values["api"]})
    vault.put_secret(f"{prefix}/billing/api", {"token": values["billing"]})
    vault.write_policy(role, read_policy(KV_MOUNT, f"{prefix}/payments/*"))
    vault.write_role(VaultRole(role, [BOUND], [namespace], [role]))
    audit_log = tmp_path_factory.mktemp("vault-audit") / "audit.log"
    vault.admin.sys.enable_audit_device("file", path=f"fetch-{suffix}", options={"file_path": str(audit_log)})
    yield Setup(namespace, role, prefix, values, audit_log)
    vault.admin.sys.disable_audit_device(f"fetch-{suffix}")
    control_plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


# --------------------------------------------------------------------------------------
# Running `kvinject fetch` as the init container would
# --------------------------------------------------------------------------------------


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    termination_log: str | None
    out: Path

    def files(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(self.out.iterdir())}

    @property
    def output(self) -> str:
        return self.stdout + self.stderr + (self.termination_log or "")


def objects_json(annotations: dict[str, str]) -> str:
    """KVINJECT_OBJECTS as the webhook writes it for a pod with these annotations (store vault)."""
    request = contract.parse_annotations({"kvinject.io/store": STORE_VAULT, **annotations})
    return plan.fetch_objects(request)


class Fetcher:
    def __init__(self, vault: VaultServer, control_plane: ControlPlane, setup: Setup, tmp_path: Path) -> None:
        self.vault, self.cp, self.setup, self.tmp_path = vault, control_plane, setup, tmp_path
        self.runs = 0
        self.tokens: list[str] = []  # every ServiceAccount token handed to a run: none may be printed

    def token(self, account: str = BOUND, audience: str | None = "vault") -> Path:
        jwt = self.vault.service_account_token(self.cp, self.setup.namespace, account, audience=audience)
        self.tokens.append(jwt)
        path = self.tmp_path / f"token-{len(self.tokens)}"
        path.write_text(jwt)
        return path

    def env(self, token: Path, ca_file: Path, out: Path) -> dict[str, str]:
        settings = Settings(hashicorp_vault_address=self.vault.url, hashicorp_vault_ca_configmap="vault-ca")
        spec = providers.get(STORE_VAULT).init_spec(Identity(self.setup.role, "kubernetes", STORE_VAULT), settings)
        from_spec = dict(spec.env)
        # In a pod these two name files of the projected volume (the token, the CA ConfigMap's ca.crt).
        assert from_spec[ENV_TOKEN_FILE].startswith(spec.token_dir)
        assert from_spec[ENV_CA_CERT].startswith(spec.token_dir)
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "KVINJECT_", "AZURE_"))}
        return {
            **inherited,
            **from_spec,
            ENV_TOKEN_FILE: str(token),
            ENV_CA_CERT: str(ca_file),
            "KVINJECT_OUTPUT_DIR": str(out),
            "KVINJECT_TERMINATION_LOG": str(out.parent / "termination-log"),
        }

    def __call__(
        self, annotations: dict[str, str], token: Path | None = None, ca_file: Path | None = None, **extra: str
    ) -> Run:
        self.runs += 1
        out = self.tmp_path / f"run-{self.runs}" / "secrets"
        out.mkdir(parents=True)
        env = {
            **self.env(token or self.token(), ca_file or self.vault.ca_file, out),
            "KVINJECT_OBJECTS": objects_json(annotations),
            **extra,
        }
        done = subprocess.run(
            [sys.executable, "-m", "webhook.fetch"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        log = Path(env["KVINJECT_TERMINATION_LOG"])
        run = Run(done.returncode, done.stdout, done.stderr, log.read_text() if log.exists() else None, out)
        sys.stderr.write(f"\n[fetch] exit {run.code}\n{run.stderr}termination log: {run.termination_log!r}\n")
        return run


def leaks(name: str, text: str, values: list[str]) -> list[str]:
    """The harness's scan (seeded values, token-shaped text, bearer credentials), the values' first 24 characters
    too (a truncated value is still a leak), and Vault's service tokens (they start with hvs.)."""
    found = hygiene.leaks(name, text, [v.strip()[:24] for v in values])
    return found + ([f"{name}: a Vault token"] if "hvs." in text else [])


@pytest.fixture
def fetch(vault: VaultServer, control_plane: ControlPlane, setup: Setup, tmp_path: Path) -> Iterator[Fetcher]:
    fetcher = Fetcher(vault, control_plane, setup, tmp_path)
    yield fetcher
    # Every termination log of every test: no seeded value, no token.
    for log in sorted(tmp_path.glob("run-*/termination-log")):
        assert leaks(str(log), log.read_text(), list(setup.values.values())) == []


def audit_mark(setup: Setup) -> int:
    return len(setup.audit_log.read_text().splitlines()) if setup.audit_log.exists() else 0


def calls_since(setup: Setup, mark: int) -> Counter[tuple[str, str, bool]]:
    """What Vault answered since `mark` (a line count of the audit log): (operation, path, refused) of every
    response. The tests run one at a time, so these are the run's own calls."""
    seen: Counter[tuple[str, str, bool]] = Counter()
    for line in setup.audit_log.read_text().splitlines()[mark:]:
        entry = json.loads(line)
        if entry.get("type") == "response":
            seen[(entry["request"]["operation"], entry["request"]["path"], bool(entry.get("error")))] += 1
    return seen


# --------------------------------------------------------------------------------------
# Allowed: the files, with the right bytes, and the calls Vault saw
# --------------------------------------------------------------------------------------


def test_a_bound_service_account_gets_its_files(fetch: Fetcher, setup: Setup) -> None:
    mark = audit_mark(setup)

    run = fetch(
        {
            "kvinject.io/secret-db-password": setup.ref("payments/db", "password"),
            "kvinject.io/secret-db-user": setup.ref("payments/db", "username"),
            "kvinject.io/secret-api-token": setup.ref("payments/api", "token"),
        },
        KVINJECT_FS_GROUP=str(os.getgid()),
    )

    assert run.code == 0, run.stderr
    assert run.files() == {
        "api-token": setup.values["api"].encode(),
        "db-password": setup.values["password"].encode("utf-8"),
        "db-user": setup.values["username"].encode(),
    }
    assert {(p.stat().st_mode & 0o777) for p in run.out.iterdir()} == {0o440}
    assert run.termination_log is None and run.stdout == ""
    assert f"db-password ({setup.secret('payments/db')}#password): written to" in run.stderr
    # One login, one GET per distinct path (the two keys of payments/db share one), the token revoked at the end.
    assert calls_since(setup, mark) == {
        ("update", "auth/kubernetes/login", False): 1,
        ("read", setup.data("payments/db"), False): 1,
        ("read", setup.data("payments/api"), False): 1,
        ("update", "auth/token/revoke-self", False): 1,
    }


# --------------------------------------------------------------------------------------
# Failures: the termination log's reasons, nothing written
# --------------------------------------------------------------------------------------


# id: the objects (alias, path, key), and the reason of each failing alias ({role}, {<path>} filled in)
FAILURES = {
    "path-not-granted": (
        [("db-password", "payments/db", "password"), ("billing", "billing/api", "token")],
        {"billing": "role {role} may not read {billing/api}"},
    ),
    "path-not-found": (
        [("db-password", "payments/db", "password"), ("gone", "payments/gone", "token")],
        {"gone": "path not found: {payments/gone}"},
    ),
    "key-not-found": (
        [("db-password", "payments/db", "password"), ("nope", "payments/db", "nope")],
        {"nope": "key nope not found in {payments/db}"},
    ),
    "two-keys-of-a-path-not-granted": (
        [("a", "billing/api", "token"), ("b", "billing/api", "other")],
        {"a": "role {role} may not read {billing/api}", "b": "role {role} may not read {billing/api}"},
    ),
}


@pytest.mark.parametrize("case", FAILURES.values(), ids=FAILURES.keys())
def test_a_failed_read_writes_nothing_and_says_why(
    fetch: Fetcher, setup: Setup, case: tuple[list[tuple[str, str, str]], dict[str, str]]
) -> None:
    wanted, reasons = case
    mark = audit_mark(setup)

    run = fetch({f"kvinject.io/secret-{alias}": setup.ref(path, key) for alias, path, key in wanted})

    def expand(text: str) -> str:
        for _, path, _ in wanted:
            text = text.replace("{" + path + "}", setup.secret(path))
        return text.replace("{role}", setup.role)

    assert run.code == 1
    expected = [f"{a} ({setup.secret(p)}#{k}): {expand(reasons[a])}" for a, p, k in sorted(wanted) if a in reasons]
    assert run.termination_log == "".join(f"{line}\n" for line in expected)
    assert run.files() == {}
    for alias, path, key in wanted:
        if alias not in reasons:
            assert f"{alias} ({setup.secret(path)}#{key}): read, not written (another object failed)" in run.stderr
    # Refusals are final: each distinct path was asked exactly once, whatever the number of its keys.
    reads = {(op, path): n for (op, path, _), n in calls_since(setup, mark).items() if op == "read"}
    assert reads == {("read", setup.data(path)): 1 for _, path, _ in wanted}


LOGIN_REFUSALS = {
    "service-account-not-bound": (UNBOUND, "vault", "service account name not authorized"),
    "apiserver-audience": (BOUND, None, "invalid audience (aud) claim: audience claim does not match any expected"),
}


@pytest.mark.parametrize("case", LOGIN_REFUSALS.values(), ids=LOGIN_REFUSALS.keys())
def test_a_refused_login_names_vaults_error(fetch: Fetcher, setup: Setup, case: tuple[str, str | None, str]) -> None:
    account, audience, said = case
    mark = audit_mark(setup)
    run = fetch(
        {
            "kvinject.io/secret-db-password": setup.ref("payments/db", "password"),
            "kvinject.io/secret-api-token": setup.ref("payments/api", "token"),
        },
        token=fetch.token(account, audience),
    )
    assert run.code == 1
    assert run.termination_log is not None
    lines = run.termination_log.splitlines()
    assert [line.split(": ", 1)[0] for line in lines] == [
        f"api-token ({setup.secret('payments/api')}#token)",
        f"db-password ({setup.secret('payments/db')}#password)",
    ]
    reason = f"Vault refused the login as role {setup.role} on auth/kubernetes: {said}"
    assert all(line.split(": ", 1)[1].startswith(reason) for line in lines), lines
    assert run.files() == {}
    assert calls_since(setup, mark) == {("update", "auth/kubernetes/login", True): 1}  # refused once, not retried


def test_a_certificate_from_another_ca_is_refused_without_retries(
    fetch: Fetcher, setup: Setup, control_plane: ControlPlane, vault: VaultServer
) -> None:
    mark = audit_mark(setup)
    run = fetch(
        {"kvinject.io/secret-db-password": setup.ref("payments/db", "password")},
        ca_file=control_plane.ca_file,  # a real CA, not Vault's
        KVINJECT_FETCH_RETRIES="3",
    )
    assert run.code == 1
    assert run.termination_log == (
        f"db-password ({setup.secret('payments/db')}#password): Vault at {vault.url} unreachable: TLS certificate "
        "verification failed (unable to get local issuer certificate)\n"
    )
    assert calls_since(setup, mark) == {}  # nothing was sent


def test_a_stopped_vault_is_retried_then_reported(fetch: Fetcher, setup: Setup, vault: VaultServer) -> None:
    token = fetch.token()
    both = {
        "kvinject.io/secret-db-password": setup.ref("payments/db", "password"),
        "kvinject.io/secret-api-token": setup.ref("payments/api", "token"),
    }
    vault.stop()
    try:
        run = fetch(both, token=token, KVINJECT_FETCH_RETRIES="2")
    finally:
        vault.start()
    assert run.code == 1
    reason = f"Vault at {vault.url} unreachable: connection refused after 3 attempts"
    assert run.termination_log == (
        f"api-token ({setup.secret('payments/api')}#token): {reason}\n"
        f"db-password ({setup.secret('payments/db')}#password): {reason}\n"
    )
    assert run.files() == {}
    # Vault back: the same token and environment now succeed.
    again = fetch(both, token=token)
    assert again.code == 0, again.stderr


def test_a_vault_that_does_not_answer_is_bounded_by_the_budget(
    fetch: Fetcher, setup: Setup, vault: VaultServer
) -> None:
    """Vault's process frozen (SIGSTOP): the kernel still accepts the connection, nothing answers the TLS handshake.
    The one attempt gets the whole budget and ends with it; no retry is started without budget left."""
    token = fetch.token()
    os.kill(vault.pid, signal.SIGSTOP)
    try:
        run = fetch(
            {"kvinject.io/secret-db-password": setup.ref("payments/db", "password")},
            token=token,
            KVINJECT_FETCH_TIMEOUT_SECONDS="3",
            KVINJECT_FETCH_RETRIES="5",
        )
    finally:
        os.kill(vault.pid, signal.SIGCONT)
    assert run.code == 1
    assert run.termination_log == (
        f"db-password ({setup.secret('payments/db')}#password): Vault at {vault.url} unreachable: timed out after 1 "
        "attempt (time budget spent)\n"
    )
    assert vault.health() == 200  # thawed, unsealed, serving


def test_a_sealed_vault_answers_503_and_is_retried(fetch: Fetcher, setup: Setup, vault: VaultServer) -> None:
    token = fetch.token()
    vault.admin.sys.seal()
    try:
        run = fetch(
            {"kvinject.io/secret-db-password": setup.ref("payments/db", "password")},
            token=token,
            KVINJECT_FETCH_RETRIES="1",
        )
    finally:
        vault.stop()
        vault.start()  # unsealed again
    assert run.code == 1
    assert run.termination_log == (
        f"db-password ({setup.secret('payments/db')}#password): Vault login answered HTTP 503 after 2 attempts\n"
    )
    assert run.files() == {}


# --------------------------------------------------------------------------------------
# Hygiene, and the fetch image's packages
# --------------------------------------------------------------------------------------


def test_no_value_or_token_in_any_output(fetch: Fetcher, setup: Setup) -> None:
    both = {
        "kvinject.io/secret-db-password": setup.ref("payments/db", "password"),
        "kvinject.io/secret-db-user": setup.ref("payments/db", "username"),
    }
    runs = [
        fetch(both),  # success
        fetch({**both, "kvinject.io/secret-gone": setup.ref("payments/gone", "x")}),  # read, then a 404
        fetch({**both, "kvinject.io/secret-billing": setup.ref("billing/api", "token")}),  # read, then a 403
        fetch({**both, "kvinject.io/secret-nope": setup.ref("payments/db", "nope")}),  # a key missing beside others
        fetch(both, token=fetch.token(UNBOUND)),  # login refused
    ]
    assert [r.code for r in runs] == [0, 1, 1, 1, 1]
    for run in runs:
        assert leaks("kvinject fetch", run.output, list(setup.values.values())) == []
        for jwt in fetch.tokens:
            assert jwt.split(".")[2][:24] not in run.output  # the signature, were a token cut short


def test_the_fetch_image_reads_vault_without_the_serve_packages(
    fetch: Fetcher, setup: Setup, tmp_path: Path, vault: VaultServer
) -> None:
    """Through the console script with the serve extra's modules unimportable, as in the kvinject-fetch image: the
    Vault reader needs the standard library only (no hvac, no requests, no Azure SDK loaded)."""
    out = tmp_path / "image" / "secrets"
    out.mkdir(parents=True)
    env = {
        **fetch.env(fetch.token(), vault.ca_file, out),
        "KVINJECT_OBJECTS": objects_json({"kvinject.io/secret-db-user": setup.ref("payments/db", "username")}),
    }
    code, _, stderr, loaded = kvinject_without_serve("fetch", env=env)
    assert code == 0, stderr
    assert (out / "db-user").read_bytes() == setup.values["username"].encode()
    assert not loaded & {*ABSENT, "hvac", "requests", "azure"}


def live_logins(vault: VaultServer, role: str) -> int:
    """How many unexpired Vault tokens a Kubernetes-auth login as `role` left (looked up by accessor, as root)."""
    accessors = vault.admin.list("auth/token/accessors")["data"]["keys"]
    metas = [vault.admin.lookup_token(a, accessor=True)["data"].get("meta") or {} for a in accessors]
    return sum(1 for m in metas if m.get("role") == role)


def test_no_vault_token_of_the_role_outlives_its_run(
    fetch: Fetcher, setup: Setup, vault: VaultServer, control_plane: ControlPlane
) -> None:
    """Every run revoked its token in close(): Vault holds no live token of the role (this module's runs, failed
    ones included). A login that is not revoked is seen by the same lookup."""
    run = fetch({"kvinject.io/secret-db-password": setup.ref("payments/db", "password")})
    assert run.code == 0, run.stderr
    assert live_logins(vault, setup.role) == 0
    kept = vault.login(vault.service_account_token(control_plane, setup.namespace, BOUND), setup.role)
    try:
        assert live_logins(vault, setup.role) == 1
    finally:
        kept.auth.token.revoke_self()
