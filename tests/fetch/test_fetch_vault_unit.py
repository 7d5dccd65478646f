"""`kvinject fetch` for HashiCorp Vault without a Vault: the store chosen from KVINJECT_STORE, Vault objects and
access from the environment, the reader's login / read-once-per-path / revoke around a fake of its own Transport
seam, and the reasons in the termination log. The real Vault is in tests/e2e/vault/test_fetch_vault.py."""

from __future__ import annotations

import io
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.harness.pki import PKI
from webhook import fetch, providers
from webhook.contract import ObjectType
from webhook.fetch import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, FetchConfig
from webhook.providers.azure.access import VaultAccess as KeyVaultAccess
from webhook.providers.reading import FailureKind, ObjectSpec, ReadError
from webhook.providers.vault.access import VaultAccess, access_from_env
from webhook.providers.vault.reader import Answer, VaultReader

SECRET = "correct-horse-battery-staple-\u00e9"  # a value that must never be printed
OTHER_SECRET = "the-other-key-of-the-same-path"
JWT = "eyJhbGciOiJSUzI1NiJ9.c2VydmljZS1hY2NvdW50.c2lnbmF0dXJl"  # stands in for the projected token
VAULT_TOKEN = "hvs.CAESIJ-not-a-real-token"
ADDRESS = "https://vault.example:8200"
ROLE = "payments"


def kv2(data: dict[str, Any]) -> bytes:
    return json.dumps({"data": {"data": data, "metadata": {"version": 3}}}).encode()


def errors(*messages: str) -> bytes:
    return json.dumps({"errors": list(messages)}).encode()


LOGIN_OK = Answer(200, json.dumps({"auth": {"client_token": VAULT_TOKEN, "policies": ["payments"]}}).encode())
DB = Answer(200, kv2({"password": SECRET, "username": OTHER_SECRET, "port": 5432}))


# --------------------------------------------------------------------------------------
# A fake of the reader's own Transport seam
# --------------------------------------------------------------------------------------


@dataclass
class Call:
    method: str
    path: str
    token: str | None = field(repr=False)
    payload: dict[str, Any] | None = field(repr=False)


@dataclass
class FakeVault:
    """Answers by (method, path), in order (the last repeats); an answer may be a ReadError to raise."""

    answers: dict[tuple[str, str], list[Answer | ReadError]]
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(
        self, method: str, path: str, *, token: str | None, payload: dict[str, Any] | None, timeout: float
    ) -> Answer:
        with self.lock:
            self.calls.append(Call(method, path, token, payload))
            queue = self.answers.get((method, path)) or [Answer(404, errors())]
            answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, ReadError):
            raise answer
        return answer

    def paths(self) -> list[tuple[str, str]]:
        return [(c.method, c.path) for c in self.calls]


LOGIN = ("POST", "auth/kubernetes/login")
REVOKE = ("POST", "auth/token/revoke-self")


def vault_with(**reads: list[Answer | ReadError]) -> FakeVault:
    """Login succeeds; `reads` maps a path under secret/data/ (with / as __) to its answers."""
    answers: dict[tuple[str, str], list[Answer | ReadError]] = {LOGIN: [LOGIN_OK], REVOKE: [Answer(204, b"")]}
    for name, queue in reads.items():
        answers[("GET", "secret/data/" + name.replace("__", "/"))] = queue
    return FakeVault(answers)


def obj(alias: str, path: str = "payments/db", key: str = "password", mount: str = "secret") -> ObjectSpec:
    return ObjectSpec(alias, mount, path, ObjectType.SECRET, "", key)


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(JWT + "\n")
    return path


def reader(token_file: Path, transport: FakeVault) -> VaultReader:
    return VaultReader(VaultAccess(ADDRESS, ROLE, "kubernetes", token_file), 60, transport=transport)


def read_error(call: Any) -> ReadError:
    with pytest.raises(ReadError) as raised:
        call()
    return raised.value


# --------------------------------------------------------------------------------------
# The reader: login once, one GET per path, revoke on close
# --------------------------------------------------------------------------------------


def test_one_login_one_read_per_path_and_the_token_revoked(token_file: Path) -> None:
    vault = vault_with(payments__db=[DB], payments__api=[Answer(200, kv2({"token": "t"}))])
    r = reader(token_file, vault)

    got = [r.read(o, 10) for o in (obj("a"), obj("b", key="username"), obj("c", "payments/api", "token"))]
    r.close()

    assert got == [SECRET.encode(), OTHER_SECRET.encode(), b"t"]
    assert vault.paths() == [LOGIN, ("GET", "secret/data/payments/db"), ("GET", "secret/data/payments/api"), REVOKE]
    login, *reads, revoke = vault.calls
    assert (login.token, login.payload) == (None, {"role": ROLE, "jwt": JWT})  # the file's token, stripped
    assert {c.token for c in [*reads, revoke]} == {VAULT_TOKEN}


def test_a_non_string_value_is_written_as_json(token_file: Path) -> None:
    assert reader(token_file, vault_with(payments__db=[DB])).read(obj("p", key="port"), 10) == b"5432"


def test_the_token_file_is_read_at_login_not_before(token_file: Path) -> None:
    vault = vault_with(payments__db=[DB])
    r = reader(token_file, vault)
    token_file.write_text("rotated-by-the-kubelet")
    r.read(obj("a"), 10)
    assert vault.calls[0].payload == {"role": ROLE, "jwt": "rotated-by-the-kubelet"}


def test_another_auth_mount_and_nested_path(token_file: Path) -> None:
    vault = FakeVault({("POST", "auth/k8s-east/login"): [LOGIN_OK], ("GET", "kv/data/team/a/b.c"): [DB]})
    r = VaultReader(VaultAccess(ADDRESS, ROLE, "k8s-east", token_file), 60, transport=vault)
    assert r.read(obj("a", "team/a/b.c", mount="kv"), 10) == SECRET.encode()


def test_an_assertion_in_memory_replaces_the_token_file() -> None:
    vault = vault_with(payments__db=[DB])
    r = VaultReader(VaultAccess(ADDRESS, ROLE), 60, assertion=lambda: "from-memory", transport=vault)
    r.read(obj("a"), 10)
    assert vault.calls[0].payload == {"role": ROLE, "jwt": "from-memory"}


def test_neither_token_file_nor_assertion_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="no token file"):
        VaultReader(VaultAccess(ADDRESS, ROLE), 60, transport=FakeVault({}))


UNREACHABLE = ReadError(FailureKind.UNREACHABLE, "connection refused", transient=True)

# id: (answers of the login, answers of secret/data/payments/db, object), the error, and whether a second read
# of the same object calls Vault again (transient) or repeats the final answer from memory.
FAILURES = {
    "login-refused": (
        [Answer(403, errors("service account name not authorized"))],
        [DB],
        obj("a"),
        (
            FailureKind.TOKEN,
            "Vault refused the login as role payments on auth/kubernetes: service account name not authorized",
            False,
        ),
    ),
    "login-unknown-role": (
        [Answer(400, errors('invalid role name "payments"'))],
        [DB],
        obj("a"),
        (
            FailureKind.TOKEN,
            'Vault refused the login as role payments on auth/kubernetes: invalid role name "payments"',
            False,
        ),
    ),
    "login-without-token": (
        [Answer(200, b'{"auth": null}')],
        [DB],
        obj("a"),
        (FailureKind.TOKEN, "Vault's login answer carries no client token", False),
    ),
    "login-sealed": (
        [Answer(503, errors("Vault is sealed"))],
        [DB],
        obj("a"),
        (FailureKind.TOKEN_UNREACHABLE, "Vault login answered HTTP 503", True),
    ),
    "login-unreachable": ([UNREACHABLE], [DB], obj("a"), (FailureKind.UNREACHABLE, "connection refused", True)),
    "read-denied": (
        [LOGIN_OK],
        [Answer(403, errors("1 error occurred:\n\t* permission denied\n\n"))],
        obj("a"),
        (FailureKind.DENIED, "role payments may not read secret/payments/db", False),
    ),
    "path-not-found": (
        [LOGIN_OK],
        [Answer(404, errors())],
        obj("a"),
        (FailureKind.NOT_FOUND, "path not found: secret/payments/db", False),
    ),
    "key-not-found": (
        [LOGIN_OK],
        [DB],
        obj("a", key="nope"),
        (FailureKind.NOT_FOUND, "key nope not found in secret/payments/db", False),
    ),
    "read-throttled": (
        [LOGIN_OK],
        [Answer(429, errors("request path kv/data/x: rate limit quota exceeded"), retry_after=2.0)],
        obj("a"),
        (FailureKind.UNAVAILABLE, "Vault answered HTTP 429", True),
    ),
    "read-unavailable": (
        [LOGIN_OK],
        [Answer(500, errors("internal error"))],
        obj("a"),
        (FailureKind.UNAVAILABLE, "Vault answered HTTP 500", True),
    ),
    "read-unreachable": ([LOGIN_OK], [UNREACHABLE], obj("a"), (FailureKind.UNREACHABLE, "connection refused", True)),
    "read-other-refusal": (
        [LOGIN_OK],
        [Answer(412, errors("required index state not present"))],
        obj("a"),
        (FailureKind.REJECTED, "HTTP 412 required index state not present", False),
    ),
    "not-kv-v2": (
        [LOGIN_OK],
        [Answer(200, b'{"data": {"password": "kv-v1-shape"}}')],
        obj("a"),
        (FailureKind.INVALID, "secret/payments/db is not a KV v2 secret with data", False),
    ),
}


@pytest.mark.parametrize("case", FAILURES.values(), ids=FAILURES.keys())
def test_failures(
    token_file: Path, case: tuple[list[Any], list[Any], ObjectSpec, tuple[FailureKind, str, bool]]
) -> None:
    login, reads, wanted, (kind, detail, transient) = case
    vault = FakeVault({LOGIN: login, ("GET", "secret/data/payments/db"): reads, REVOKE: [Answer(204, b"")]})
    r = reader(token_file, vault)

    first = read_error(lambda: r.read(wanted, 10))
    calls = len(vault.calls)
    second = read_error(lambda: r.read(wanted, 10))

    assert (first.kind, first.detail, first.transient) == (kind, detail, transient)
    assert (second.kind, second.detail) == (kind, detail)
    assert (len(vault.calls) > calls) == transient  # a final answer is remembered, a transient one asked again
    assert SECRET not in first.detail and OTHER_SECRET not in first.detail and VAULT_TOKEN not in str(first)


def test_retry_after_of_a_throttled_read_reaches_the_retry_loop(token_file: Path) -> None:
    vault = vault_with(payments__db=[Answer(429, errors("quota"), retry_after=2.0)])
    assert read_error(lambda: reader(token_file, vault).read(obj("a"), 10)).retry_after == 2.0


def test_a_refused_login_is_not_repeated_by_other_objects(token_file: Path) -> None:
    vault = FakeVault({LOGIN: [Answer(403, errors("permission denied"))]})
    r = reader(token_file, vault)
    for o in (obj("a"), obj("b", "payments/api", "token"), obj("c", mount="kv")):
        read_error(lambda o=o: r.read(o, 10))
    assert vault.paths() == [LOGIN]


@pytest.mark.parametrize(
    ("prepare", "detail"),
    [
        pytest.param(
            lambda p: p.unlink(),
            "cannot read the ServiceAccount token {path}: No such file or directory",
            id="token-file-gone",
        ),
        pytest.param(lambda p: p.write_text("\n"), "the ServiceAccount token file {path} is empty", id="token-empty"),
    ],
)
def test_an_unreadable_token_file_is_a_token_failure(token_file: Path, prepare: Any, detail: str) -> None:
    vault = vault_with(payments__db=[DB])
    r = reader(token_file, vault)
    prepare(token_file)
    error = read_error(lambda: r.read(obj("a"), 10))
    assert (error.kind, error.detail) == (FailureKind.TOKEN, detail.format(path=token_file))
    assert vault.calls == []


def test_close_without_a_login_calls_nothing_and_a_failed_revoke_is_ignored(token_file: Path) -> None:
    idle = vault_with()
    reader(token_file, idle).close()
    assert idle.calls == []
    failing = FakeVault({LOGIN: [LOGIN_OK], ("GET", "secret/data/payments/db"): [DB], REVOKE: [UNREACHABLE]})
    r = reader(token_file, failing)
    r.read(obj("a"), 10)
    r.close()  # does not raise
    r.close()  # nor revokes twice
    assert failing.paths().count(REVOKE) == 1


def test_nothing_secret_in_the_reader_repr_or_answers(token_file: Path) -> None:
    r = reader(token_file, vault_with(payments__db=[DB]))
    r.read(obj("a"), 10)
    for text in (repr(r), repr(DB), repr(LOGIN_OK)):
        assert SECRET not in text and VAULT_TOKEN not in text and JWT not in text


# --------------------------------------------------------------------------------------
# Access from the environment
# --------------------------------------------------------------------------------------


@pytest.fixture
def vault_env(tmp_path: Path, token_file: Path) -> dict[str, str]:
    pki = PKI(tmp_path / "pki", ca_common_name="unit-vault-ca")
    return {
        "VAULT_ADDR": ADDRESS,
        "KVINJECT_HASHICORP_VAULT_ROLE": ROLE,
        "KVINJECT_HASHICORP_VAULT_AUTH_MOUNT": "k8s-east",
        "KVINJECT_HASHICORP_VAULT_TOKEN_FILE": str(token_file),
        "VAULT_CACERT": str(pki.ca_cert),
    }


def test_access_from_a_complete_environment(vault_env: dict[str, str]) -> None:
    access, identity, endpoint = access_from_env(vault_env)
    assert (identity, endpoint) == ([], [])
    assert access == VaultAccess(
        ADDRESS,
        ROLE,
        "k8s-east",
        Path(vault_env["KVINJECT_HASHICORP_VAULT_TOKEN_FILE"]),
        Path(vault_env["VAULT_CACERT"]),
    )
    assert access is not None and access.principal == ROLE
    assert access.tls_context().verify_mode.name == "CERT_REQUIRED" and access.tls_context().check_hostname


def test_access_defaults(vault_env: dict[str, str]) -> None:
    env = {k: v for k, v in vault_env.items() if k not in ("VAULT_CACERT", "KVINJECT_HASHICORP_VAULT_AUTH_MOUNT")}
    access, _, _ = access_from_env({**env, "VAULT_ADDR": ADDRESS + "/"})
    assert access == VaultAccess(ADDRESS, ROLE, "kubernetes", Path(env["KVINJECT_HASHICORP_VAULT_TOKEN_FILE"]), None)


@pytest.mark.parametrize(
    ("overrides", "identity", "endpoint"),
    [
        pytest.param(
            {"KVINJECT_HASHICORP_VAULT_ROLE": ""}, ["KVINJECT_HASHICORP_VAULT_ROLE is not set"], [], id="no-role"
        ),
        pytest.param(
            {"KVINJECT_HASHICORP_VAULT_ROLE": "a b"},
            ["KVINJECT_HASHICORP_VAULT_ROLE 'a b' is not a Vault role name"],
            [],
            id="bad-role",
        ),
        pytest.param(
            {"KVINJECT_HASHICORP_VAULT_AUTH_MOUNT": "a b"},
            ["KVINJECT_HASHICORP_VAULT_AUTH_MOUNT 'a b' is not an auth mount path"],
            [],
            id="bad-mount",
        ),
        pytest.param(
            {"KVINJECT_HASHICORP_VAULT_TOKEN_FILE": ""},
            ["KVINJECT_HASHICORP_VAULT_TOKEN_FILE is not set"],
            [],
            id="no-token-file",
        ),
        pytest.param(
            {"KVINJECT_HASHICORP_VAULT_TOKEN_FILE": "/nonexistent/token"},
            [
                "KVINJECT_HASHICORP_VAULT_TOKEN_FILE /nonexistent/token does not exist (is the projected token volume "
                "mounted?)"
            ],
            [],
            id="token-file-missing",
        ),
        pytest.param({"VAULT_ADDR": ""}, [], ["VAULT_ADDR is not set"], id="no-address"),
        pytest.param(
            {"VAULT_ADDR": "http://vault:8200"},
            [],
            ["VAULT_ADDR must be an https URL with no path, like https://vault.example:8200, not 'http://vault:8200'"],
            id="plain-http",
        ),
        pytest.param(
            {"VAULT_ADDR": "https://vault/v1"},
            [],
            ["VAULT_ADDR must be an https URL with no path, like https://vault.example:8200, not 'https://vault/v1'"],
            id="with-path",
        ),
        pytest.param(
            {"VAULT_ADDR": "https://vault:99999"},
            [],
            ["VAULT_ADDR 'https://vault:99999' has an invalid port"],
            id="bad-port",
        ),
        pytest.param(
            {"VAULT_CACERT": "/nonexistent/ca.crt"},
            [],
            ["VAULT_CACERT /nonexistent/ca.crt does not exist (is the CA ConfigMap mounted?)"],
            id="ca-missing",
        ),
    ],
)
def test_access_problems(
    vault_env: dict[str, str], overrides: dict[str, str], identity: list[str], endpoint: list[str]
) -> None:
    assert access_from_env({**vault_env, **overrides}) == (None, identity, endpoint)


def test_a_ca_file_without_a_certificate(vault_env: dict[str, str], tmp_path: Path) -> None:
    bogus = tmp_path / "ca.crt"
    bogus.write_text("not a certificate\n")
    assert access_from_env({**vault_env, "VAULT_CACERT": str(bogus)}) == (
        None,
        [],
        [f"VAULT_CACERT {bogus} holds no PEM certificate"],
    )


# --------------------------------------------------------------------------------------
# The store from KVINJECT_STORE, Vault objects, the run and its reasons
# --------------------------------------------------------------------------------------


def fetch_env(tmp_path: Path, vault_env: dict[str, str], objects: list[dict[str, str]], **extra: str) -> dict[str, str]:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return {
        **vault_env,
        "KVINJECT_STORE": "vault",
        "KVINJECT_OBJECTS": json.dumps(objects),
        "KVINJECT_OUTPUT_DIR": str(out),
        "KVINJECT_TERMINATION_LOG": str(tmp_path / "termination-log"),
        **extra,
    }


def vobj(
    alias: str = "db", vault: str = "secret", name: str = "payments/db", key: str = "password", **more: str
) -> dict[str, str]:
    return {"alias": alias, "vault": vault, "name": name, "type": "secret", "version": "", "key": key, **more}


def test_kvinject_store_selects_the_vault_provider(tmp_path: Path, vault_env: dict[str, str]) -> None:
    config = fetch.load_config(fetch_env(tmp_path, vault_env, [vobj()]))
    assert config.store == "vault" and isinstance(config.access, VaultAccess)
    assert config.objects == (ObjectSpec("db", "secret", "payments/db", ObjectType.SECRET, "", "password"),)
    assert config.objects[0].label == "db (secret/payments/db#password)"


def test_without_kvinject_store_azure_reads_as_before(tmp_path: Path, token_file: Path) -> None:
    env = {
        "KVINJECT_OBJECTS": json.dumps([{"alias": "a", "vault": "payments-kv", "name": "a"}]),
        "KVINJECT_OUTPUT_DIR": str(tmp_path),
        "AZURE_CLIENT_ID": "cid",
        "AZURE_TENANT_ID": "tid",
        "AZURE_FEDERATED_TOKEN_FILE": str(token_file),
    }
    config = fetch.load_config(env)
    assert config.store == "azure" and isinstance(config.access, KeyVaultAccess)
    assert config.objects[0].label == "a (payments-kv/a)"


@pytest.mark.parametrize(
    ("store", "objects", "problem"),
    [
        pytest.param(
            "vault",
            [vobj(key="")],
            "KVINJECT_OBJECTS[0]: no key: a Vault object names the field of secret/payments/db to write",
            id="no-key",
        ),
        pytest.param(
            "vault",
            [vobj(name="data/payments/db")],
            "KVINJECT_OBJECTS[0]: path 'data/payments/db' starts with KV v2's API segment data/",
            id="api-path",
        ),
        pytest.param(
            "vault",
            [vobj(name="payments/../db")],
            "KVINJECT_OBJECTS[0]: path 'payments/../db' must be segments",
            id="dot-dot",
        ),
        pytest.param(
            "vault",
            [vobj(vault="team/kv")],
            "KVINJECT_OBJECTS[0]: mount 'team/kv' must be one path segment",
            id="nested-mount",
        ),
        pytest.param("vault", [vobj(key="a b")], "KVINJECT_OBJECTS[0]: key 'a b' must be 1-128 letters", id="bad-key"),
        pytest.param(
            "vault",
            [vobj(version="3")],
            "KVINJECT_OBJECTS[0]: a Vault object has no type but secret and no version",
            id="version",
        ),
        pytest.param(
            "vault", [vobj(type="cert")], "KVINJECT_OBJECTS[0]: a Vault object has no type but secret", id="cert"
        ),
        pytest.param("vault", [vobj(key=3)], "KVINJECT_OBJECTS[0]: 'key' must be a string", id="key-not-a-string"),  # type: ignore[arg-type]
        pytest.param(
            "vault", [vobj(), vobj(key="username")], "KVINJECT_OBJECTS: alias 'db' is used twice", id="alias-twice"
        ),
        pytest.param(
            "azure",
            [{"alias": "a", "vault": "payments-kv", "name": "a", "key": "x"}],
            "KVINJECT_OBJECTS[0]: key 'x': a Key Vault object has no key",
            id="azure-with-key",
        ),
        pytest.param("consul", [vobj()], "KVINJECT_STORE 'consul' must be azure or vault", id="unknown-store"),
    ],
)
def test_unusable_vault_configuration_exits_2(
    tmp_path: Path, vault_env: dict[str, str], store: str, objects: list[dict[str, str]], problem: str
) -> None:
    env = fetch_env(tmp_path, vault_env, objects, KVINJECT_STORE=store)
    stderr = io.StringIO()
    code = fetch.run(env, lambda _c: pytest.fail("no reader for a bad configuration"), stderr=stderr)
    log = (tmp_path / "termination-log").read_text()
    assert code == EXIT_CONFIG
    assert f"configuration: {problem}" in log and problem in stderr.getvalue()


@dataclass
class ScriptedReader:
    """fetch's Reader seam: answers by alias."""

    answers: dict[str, bytes | ReadError]
    closed: bool = False

    def read(self, o: ObjectSpec, timeout: float) -> bytes:
        answer = self.answers[o.alias]
        if isinstance(answer, ReadError):
            raise answer
        return answer

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        pytest.param(
            ReadError(FailureKind.DENIED, "role payments may not read secret/payments/db"),
            "role payments may not read secret/payments/db",
            id="denied",
        ),
        pytest.param(
            ReadError(FailureKind.NOT_FOUND, "path not found: secret/payments/db"),
            "path not found: secret/payments/db",
            id="not-found",
        ),
        pytest.param(
            ReadError(FailureKind.TOKEN, "Vault refused the login as role payments on auth/kubernetes: x"),
            "Vault refused the login as role payments on auth/kubernetes: x",
            id="token",
        ),
        pytest.param(
            ReadError(FailureKind.TOKEN_UNREACHABLE, "Vault login answered HTTP 503", transient=True),
            "Vault login answered HTTP 503 after 2 attempts",
            id="token-unreachable",
        ),
        pytest.param(
            UNREACHABLE, f"Vault at {ADDRESS} unreachable: connection refused after 2 attempts", id="unreachable"
        ),
        pytest.param(
            ReadError(FailureKind.UNAVAILABLE, "Vault answered HTTP 500", transient=True),
            "Vault answered HTTP 500 after 2 attempts",
            id="unavailable",
        ),
        pytest.param(
            ReadError(FailureKind.TLS, "TLS certificate verification failed (self-signed certificate)"),
            f"Vault at {ADDRESS} unreachable: TLS certificate verification failed (self-signed certificate)",
            id="tls",
        ),
        pytest.param(
            ReadError(FailureKind.REJECTED, "HTTP 412"),
            "Vault refused the read of secret/payments/db: HTTP 412",
            id="rejected",
        ),
        pytest.param(
            ReadError(FailureKind.INVALID, "secret/payments/db is not a KV v2 secret with data"),
            "cannot use the object: secret/payments/db is not a KV v2 secret with data",
            id="invalid",
        ),
    ],
)
def test_reasons_in_the_termination_log(
    tmp_path: Path, vault_env: dict[str, str], error: ReadError, reason: str
) -> None:
    # `user` in another mount: a login or connection failure fails the rest of its own mount's objects too.
    objects = [vobj("db"), vobj("user", vault="kv", key="username")]
    env = fetch_env(tmp_path, vault_env, objects, KVINJECT_FETCH_RETRIES="1")
    scripted = ScriptedReader({"db": error, "user": b"u"})
    stderr = io.StringIO()
    code = fetch.run(env, lambda _c: scripted, stderr=stderr, clock=fetch.Clock(sleep=lambda _s: None))
    assert code == EXIT_FAILED and scripted.closed
    assert (tmp_path / "termination-log").read_text() == f"db (secret/payments/db#password): {reason}\n"
    assert list((tmp_path / "out").iterdir()) == []


def test_a_successful_vault_run_writes_every_file(tmp_path: Path, vault_env: dict[str, str]) -> None:
    env = fetch_env(tmp_path, vault_env, [vobj("db"), vobj("user", key="username")])
    captured: list[FetchConfig] = []

    def factory(config: FetchConfig) -> ScriptedReader:
        captured.append(config)
        return ScriptedReader({"db": SECRET.encode(), "user": OTHER_SECRET.encode()})

    stderr = io.StringIO()
    assert fetch.run(env, factory, stderr=stderr) == EXIT_OK
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == {
        "db": SECRET.encode(),
        "user": OTHER_SECRET.encode(),
    }
    assert isinstance(captured[0].access, VaultAccess)
    assert SECRET not in stderr.getvalue() and "db (secret/payments/db#password): written to" in stderr.getvalue()


def test_the_vault_provider_builds_the_stdlib_reader(vault_env: dict[str, str]) -> None:
    access, _, _ = access_from_env(vault_env)
    built = providers.get("vault").reader(access, 30)
    assert isinstance(built, VaultReader)
    built.close()  # never logged in: nothing to revoke, nothing sent
