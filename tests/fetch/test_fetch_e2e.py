"""`kvinject fetch` (and its refresh sidecar) as a real subprocess against the Entra and Key Vault doubles (TLS
verified through REQUESTS_CA_BUNDLE), authenticating with service-account tokens minted by the real kube-apiserver."""

from __future__ import annotations

import base64
import functools
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from tests.harness import CLIENT_ID, ROOT, TENANT_ID, ControlPlane, bundle, free_port
from tests.harness.doubles.entra import TOKEN_EXCHANGE_AUDIENCE, FakeEntra, FederatedCredential
from tests.harness.doubles.https import Request, Response
from tests.harness.doubles.keyvault import KEY_VAULT_RESOURCE, FakeKeyVault, _Vault
from tests.harness.waiting import wait_for
from webhook import certs

pytestmark = pytest.mark.e2e  # the Azure doubles and a real apiserver's tokens

PAYMENTS, SHARED = "payments-kv", "shared-kv"
FEDERATED_SA, UNFEDERATED_SA = "api", "batch"
PKCS12_TYPE, PEM_TYPE = "application/x-pkcs12", "application/x-pem-file"


# --------------------------------------------------------------------------------------
# A Key Vault double with a response delay and scripted answers
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    vault: str
    path: str
    status: int
    start: float
    end: float


class ScriptedKeyVault(FakeKeyVault):
    """FakeKeyVault whose authenticated secret reads can be delayed (``delay``) or answered from a script first
    (``script[(vault, path)]``: responses served in order before the real ones). Every such read is in ``served``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.delay = 0.0
        self.script: dict[tuple[str, str], list[Response]] = {}
        self.served: list[Served] = []
        self._served_lock = threading.Lock()

    def _app_for(self, vault: _Vault) -> Callable[[Request], Response]:
        real = super()._app_for(vault)

        def app(request: Request) -> Response:
            if request.method != "GET" or not request.headers.get("authorization"):
                return real(request)
            start = time.monotonic()
            queue = self.script.get((vault.name, request.path.rstrip("/")))
            if queue:
                response = queue.pop(0)
            else:
                time.sleep(self.delay)
                response = real(request)
            with self._served_lock:
                self.served.append(
                    Served(vault.name, request.path.rstrip("/"), response.status, start, time.monotonic())
                )
            return response

        return app


@pytest.fixture
def kv(tmp_path: Path, entra: FakeEntra) -> Iterator[ScriptedKeyVault]:
    """Vaults payments-kv and shared-kv in TENANT_ID, accepting only Key Vault tokens ``entra`` issued."""
    identity_of = functools.partial(entra.identity_of, resource=KEY_VAULT_RESOURCE)
    vaults = ScriptedKeyVault(tmp_path / "kv", [PAYMENTS, SHARED], tenant_id=TENANT_ID, identity_of=identity_of)
    with vaults:
        yield vaults
        assert not vaults.errors, "\n".join(vaults.errors)


# --------------------------------------------------------------------------------------
# Service-account tokens from the real apiserver
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sa_namespace(control_plane: ControlPlane) -> Iterator[str]:
    """A namespace with a federated (`api`) and an unfederated (`batch`) service account."""
    name = f"fetch-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl("create", "namespace", name)
    for account in (FEDERATED_SA, UNFEDERATED_SA):
        control_plane.kubectl("create", "serviceaccount", account, "-n", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def federated(control_plane: ControlPlane, entra: FakeEntra, sa_namespace: str) -> str:
    """Entra trusts the apiserver as an issuer and federates CLIENT_ID with the namespace's `api` account."""
    entra.trust_apiserver(control_plane)
    subject = f"system:serviceaccount:{sa_namespace}:{FEDERATED_SA}"
    entra.add_federated_credential(FederatedCredential(TENANT_ID, CLIENT_ID, control_plane.issuer, subject))
    return sa_namespace


def mint_token(control_plane: ControlPlane, namespace: str, account: str, path: Path) -> Path:
    """A projected-volume-like token file for `account` with the token-exchange audience."""
    minted = control_plane.kubectl(
        "create", "token", account, "-n", namespace, "--audience", TOKEN_EXCHANGE_AUDIENCE, "--duration", "10m"
    )
    path.write_text(minted.stdout.strip())
    return path


@pytest.fixture
def token_file(control_plane: ControlPlane, federated: str, tmp_path: Path) -> Path:
    return mint_token(control_plane, federated, FEDERATED_SA, tmp_path / "sa-token")


# --------------------------------------------------------------------------------------
# Running `kvinject fetch`
# --------------------------------------------------------------------------------------


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    termination_log: str | None
    seconds: float
    out: Path

    def files(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(self.out.iterdir())}

    @property
    def output(self) -> str:
        return self.stdout + self.stderr + (self.termination_log or "")


def obj(alias: str, vault: str, name: str, kind: str = "secret", version: str = "") -> dict[str, str]:
    return {"alias": alias, "vault": vault, "name": name, "type": kind, "version": version}


class Fetcher:
    """Runs `python -m webhook.fetch` with the init container's environment, in a fresh output directory."""

    def __init__(self, tmp_path: Path, entra: FakeEntra, kv: FakeKeyVault) -> None:
        self.tmp_path = tmp_path
        self.entra = entra
        self.kv = kv
        self.runs = 0
        self.ca_bundle = bundle(tmp_path / "ca-bundle.pem", entra.ca_file, kv.ca_file)

    def env(self, objects: list[dict[str, str]], token: Path, out: Path, **extra: str) -> dict[str, str]:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "KVINJECT_"))}
        return {
            **inherited,
            "KVINJECT_OBJECTS": json.dumps(objects),
            "KVINJECT_OUTPUT_DIR": str(out),
            "KVINJECT_VAULT_URLS": json.dumps({v: self.kv.vault_url(v) for v in self.kv.vault_names}),
            "KVINJECT_TERMINATION_LOG": str(out.parent / "termination-log"),
            "AZURE_CLIENT_ID": CLIENT_ID,
            "AZURE_TENANT_ID": TENANT_ID,
            "AZURE_FEDERATED_TOKEN_FILE": str(token),
            "AZURE_AUTHORITY_HOST": self.entra.authority,
            "REQUESTS_CA_BUNDLE": str(self.ca_bundle),
            "NO_PROXY": "127.0.0.1,localhost",
            **extra,
        }

    def __call__(self, objects: list[dict[str, str]], token: Path, **extra: str) -> Run:
        self.runs += 1
        out = self.tmp_path / f"run-{self.runs}" / "secrets"
        out.mkdir(parents=True)
        env = self.env(objects, token, out, **extra)
        t0 = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "webhook.fetch"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        seconds = time.monotonic() - t0
        log = Path(env["KVINJECT_TERMINATION_LOG"])
        run = Run(done.returncode, done.stdout, done.stderr, log.read_text() if log.exists() else None, seconds, out)
        sys.stderr.write(
            f"\n[fetch] exit {run.code} in {seconds:.2f}s\n{run.stderr}termination log: {run.termination_log!r}\n"
        )
        return run


@pytest.fixture
def fetch(tmp_path: Path, entra: FakeEntra, kv: ScriptedKeyVault) -> Fetcher:
    return Fetcher(tmp_path, entra, kv)


def mode_and_group(path: Path) -> tuple[int, int]:
    st = path.stat()
    return stat.S_IMODE(st.st_mode), st.st_gid


# --------------------------------------------------------------------------------------
# Success
# --------------------------------------------------------------------------------------


def test_writes_exact_contents_with_fs_group_mode(fetch: Fetcher, kv: ScriptedKeyVault, token_file: Path) -> None:
    values = {"db-password": "s3cr3t \u00e9\u00e8 \n", "api-key": "k-1"}
    kv.seed(PAYMENTS, values)
    kv.grant(PAYMENTS, CLIENT_ID, "get")
    gid = os.getgid()

    run = fetch(
        [obj("db-password", PAYMENTS, "db-password"), obj("API_KEY", PAYMENTS, "api-key")],
        token_file,
        KVINJECT_FS_GROUP=str(gid),
    )

    assert run.code == 0, run.stderr
    assert run.files() == {"API_KEY": b"k-1", "db-password": values["db-password"].encode()}
    assert {mode_and_group(run.out / name) for name in ("API_KEY", "db-password")} == {(0o440, gid)}
    assert run.termination_log is None and run.stdout == ""
    assert "db-password (payments-kv/db-password): written to" in run.stderr


def test_without_fs_group_files_are_world_readable(fetch: Fetcher, kv: ScriptedKeyVault, token_file: Path) -> None:
    kv.seed(PAYMENTS, {"db-password": "x"})
    kv.grant(PAYMENTS, CLIENT_ID, "get")
    run = fetch([obj("db-password", PAYMENTS, "db-password")], token_file)
    assert run.code == 0, run.stderr
    assert stat.S_IMODE((run.out / "db-password").stat().st_mode) == 0o444


def test_pinned_version(fetch: Fetcher, kv: ScriptedKeyVault, token_file: Path) -> None:
    old = kv.seed(PAYMENTS, {"api-key": "old"})["api-key"]
    kv.seed(PAYMENTS, {"api-key": "new"})
    kv.grant(PAYMENTS, CLIENT_ID, "get")
    run = fetch([obj("pinned", PAYMENTS, "api-key", version=old), obj("latest", PAYMENTS, "api-key")], token_file)
    assert run.code == 0, run.stderr
    assert run.files() == {"latest": b"new", "pinned": b"old"}
    assert f"pinned (payments-kv/api-key@{old}): written" in run.stderr


def test_cert_objects_through_their_backing_secret(fetch: Fetcher, kv: ScriptedKeyVault, token_file: Path) -> None:
    cert, key = certs.certificate("api.payments.example", days=1 / 24)
    pfx = pkcs12.serialize_key_and_certificates(b"api-tls", key, cert, None, serialization.NoEncryption())
    pem = (
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        + cert.public_bytes(serialization.Encoding.PEM)
    ).decode()
    with kv.admin_client(PAYMENTS) as admin:
        admin.set_secret("api-tls", base64.b64encode(pfx).decode(), content_type=PKCS12_TYPE)
        admin.set_secret("api-pem", pem, content_type=PEM_TYPE)
    kv.grant(PAYMENTS, CLIENT_ID, "get")

    run = fetch([obj("tls.pfx", PAYMENTS, "api-tls", "cert"), obj("tls.pem", PAYMENTS, "api-pem", "cert")], token_file)

    assert run.code == 0, run.stderr
    files = run.files()
    assert files == {"tls.pem": pem.encode(), "tls.pfx": pfx}
    loaded_key, loaded_cert, _ = pkcs12.load_key_and_certificates(files["tls.pfx"], None)
    assert loaded_cert == cert and loaded_key is not None


def test_vaults_are_read_concurrently(fetch: Fetcher, kv: ScriptedKeyVault, token_file: Path) -> None:
    for vault in (PAYMENTS, SHARED):
        kv.seed(vault, {"one": f"{vault}-1", "two": f"{vault}-2"})
        kv.grant(vault, CLIENT_ID, "get")
    kv.delay = 1.0
    objects = [obj(f"{v}-{n}", v, n) for v in (PAYMENTS, SHARED) for n in ("one", "two")]

    run = fetch(objects, token_file)

    assert run.code == 0, run.stderr
    assert run.files() == {
        f"{v}-{n}": f"{v}-{'1' if n == 'one' else '2'}".encode() for v in (PAYMENTS, SHARED) for n in ("one", "two")
    }
    reads = {v: [s for s in kv.served if s.vault == v and s.status == 200] for v in (PAYMENTS, SHARED)}
    assert [len(r) for r in reads.values()] == [2, 2]
    # Each vault's reads overlap the other's; four 1 s reads in sequence would need 4 s.
    assert reads[PAYMENTS][0].start < reads[SHARED][0].end and reads[SHARED][0].start < reads[PAYMENTS][0].end


def test_throttled_read_is_retried_after_retry_after(
    fetch: Fetcher, kv: ScriptedKeyVault, entra: FakeEntra, token_file: Path
) -> None:
    kv.seed(PAYMENTS, {"db-password": "after-429"})
    kv.grant(PAYMENTS, CLIENT_ID, "get")
    throttled = Response.json(
        429,
        {
            "error": {
                "code": "Throttled",
                "message": "Request was not processed because too many requests were "
                "received. Reason: VaultRequestTypeLimitReached",
            }
        },
        {"Retry-After": "1"},
    )
    kv.script[(PAYMENTS, "/secrets/db-password")] = [throttled]

    run = fetch([obj("db-password", PAYMENTS, "db-password")], token_file)

    assert run.code == 0, run.stderr
    assert run.files() == {"db-password": b"after-429"}
    served = [s for s in kv.served if s.path == "/secrets/db-password"]
    assert [s.status for s in served] == [429, 200]
    assert served[1].start - served[0].end >= 0.95  # Retry-After honoured
    assert entra.requests_for(CLIENT_ID, succeeded=True) == 1  # the token was reused for the retry


def test_the_sdk_does_not_retry_by_itself(fetch: Fetcher, kv: ScriptedKeyVault, token_file: Path) -> None:
    """With no retries of ours, one 503 is final: azure-core's own retry policy is off."""
    kv.seed(PAYMENTS, {"db-password": "x"})
    kv.grant(PAYMENTS, CLIENT_ID, "get")
    unavailable = Response.json(503, {"error": {"code": "ServiceUnavailable", "message": "Try again."}})
    kv.script[(PAYMENTS, "/secrets/db-password")] = [unavailable, unavailable]

    run = fetch([obj("db-password", PAYMENTS, "db-password")], token_file, KVINJECT_FETCH_RETRIES="0")

    assert run.code == 1
    assert run.termination_log == (
        "db-password (payments-kv/db-password): vault payments-kv unavailable: HTTP 503 ServiceUnavailable "
        "after 1 attempt\n"
    )
    assert [s.status for s in kv.served] == [503]


# --------------------------------------------------------------------------------------
# Failures: a line per object, exit 1, nothing written
# --------------------------------------------------------------------------------------


def test_missing_object_writes_nothing(fetch: Fetcher, kv: ScriptedKeyVault, token_file: Path) -> None:
    kv.seed(PAYMENTS, {"db-password": "present"})
    kv.grant(PAYMENTS, CLIENT_ID, "get")

    run = fetch([obj("db-password", PAYMENTS, "db-password"), obj("legacy", PAYMENTS, "legacy-token")], token_file)

    assert run.code == 1
    assert run.termination_log == "legacy (payments-kv/legacy-token): object not found in vault payments-kv\n"
    assert run.files() == {}
    assert "db-password (payments-kv/db-password): read, not written (another object failed)" in run.stderr


def test_identity_without_read_right(fetch: Fetcher, kv: ScriptedKeyVault, token_file: Path) -> None:
    kv.seed(PAYMENTS, {"db-password": "x"})
    kv.grant(PAYMENTS, CLIENT_ID, "list")  # may list, may not get

    run = fetch([obj("db-password", PAYMENTS, "db-password")], token_file)

    assert run.code == 1
    assert run.termination_log == (
        f"db-password (payments-kv/db-password): identity {CLIENT_ID} may not read payments-kv/db-password "
        f"(Key Vault: AccessDenied The user, group or application 'appid={CLIENT_ID};"
        f"iss=https://sts.windows.net/{TENANT_ID}/' does not have secrets get permission on key vault "
        "'payments-kv;location=eastus'.)\n"
    )
    assert run.files() == {}
    assert [s.status for s in kv.served] == [403]  # not retried


def test_unfederated_service_account(
    fetch: Fetcher, kv: ScriptedKeyVault, entra: FakeEntra, control_plane: ControlPlane, federated: str, tmp_path: Path
) -> None:
    kv.seed(PAYMENTS, {"db-password": "x"})
    kv.seed(SHARED, {"api-key": "y"})
    token = mint_token(control_plane, federated, UNFEDERATED_SA, tmp_path / "batch-token")

    run = fetch([obj("db-password", PAYMENTS, "db-password"), obj("api-key", SHARED, "api-key")], token)

    assert run.code == 1
    reason = "token exchange failed: AADSTS70021: No matching federated identity record found for presented assertion."
    assert run.termination_log == (
        f"db-password (payments-kv/db-password): {reason}\napi-key (shared-kv/api-key): {reason}\n"
    )
    assert run.files() == {}
    assert kv.served == []  # no vault was read without a token
    assert all(r.status == 401 and r.error_code == 70021 for r in entra.records)
    assert 1 <= entra.request_count <= 2  # not retried: one exchange at most per vault thread


def test_unreachable_vault_is_retried_then_reported(fetch: Fetcher, kv: ScriptedKeyVault, token_file: Path) -> None:
    kv.seed(SHARED, {"api-key": "y"})
    kv.grant(SHARED, CLIENT_ID, "get")
    urls = {PAYMENTS: f"https://127.0.0.1:{free_port()}", SHARED: kv.vault_url(SHARED)}

    run = fetch(
        [
            obj("db-password", PAYMENTS, "db-password"),
            obj("other", PAYMENTS, "other"),
            obj("api-key", SHARED, "api-key"),
        ],
        token_file,
        KVINJECT_VAULT_URLS=json.dumps(urls),
        KVINJECT_FETCH_TIMEOUT_SECONDS="20",
    )

    assert run.code == 1
    reason = "vault payments-kv unreachable: ServiceRequestError (connection refused) after 5 attempts"
    assert run.termination_log == (
        f"db-password (payments-kv/db-password): {reason}\nother (payments-kv/other): {reason}\n"
    )
    assert run.files() == {}


def test_unreachable_vault_stops_at_the_time_budget(fetch: Fetcher, token_file: Path) -> None:
    run = fetch(
        [obj("db-password", PAYMENTS, "db-password")],
        token_file,
        KVINJECT_VAULT_URLS=json.dumps({PAYMENTS: f"https://127.0.0.1:{free_port()}"}),
        KVINJECT_FETCH_TIMEOUT_SECONDS="2",
        KVINJECT_FETCH_RETRIES="20",
    )
    assert run.code == 1
    assert run.termination_log is not None
    assert run.termination_log.startswith(
        "db-password (payments-kv/db-password): vault payments-kv unreachable: ServiceRequestError "
        "(connection refused) after "
    )
    assert run.termination_log.endswith(" attempts (time budget spent)\n")


def test_a_vault_that_does_not_answer_is_bounded_by_the_budget(
    fetch: Fetcher, kv: ScriptedKeyVault, token_file: Path
) -> None:
    kv.seed(PAYMENTS, {"db-password": "x"})
    kv.grant(PAYMENTS, CLIENT_ID, "get")
    kv.delay = 6.0

    run = fetch([obj("db-password", PAYMENTS, "db-password")], token_file, KVINJECT_FETCH_TIMEOUT_SECONDS="3")

    assert run.code == 1
    assert run.termination_log == (
        "db-password (payments-kv/db-password): vault payments-kv unreachable: ServiceResponseTimeoutError after "
        "1 attempt (time budget spent)\n"
    )


def test_unusable_configuration_exits_2(fetch: Fetcher, token_file: Path) -> None:
    run = fetch([obj("../escape", PAYMENTS, "db-password")], token_file, KVINJECT_FS_GROUP="staff")
    assert run.code == 2
    assert run.termination_log == (
        "configuration: KVINJECT_OBJECTS[0]: alias '../escape' is not a safe file name (no '/', no leading '.')\n"
        "configuration: KVINJECT_FS_GROUP must be an integer between 0 and 4294967294, not 'staff'\n"
    )


# --------------------------------------------------------------------------------------
# Hygiene
# --------------------------------------------------------------------------------------


def test_no_value_or_token_in_any_output(
    fetch: Fetcher, kv: ScriptedKeyVault, control_plane: ControlPlane, federated: str, token_file: Path, tmp_path: Path
) -> None:
    values = {"db-password": f"pw-{uuid.uuid4().hex}", "api-key": f"key-{uuid.uuid4().hex}"}
    kv.seed(PAYMENTS, values)
    kv.seed(SHARED, {"api-key": values["api-key"]})
    kv.grant(PAYMENTS, CLIENT_ID, "get")
    unfederated = mint_token(control_plane, federated, UNFEDERATED_SA, tmp_path / "batch-token")
    both = [obj("db-password", PAYMENTS, "db-password"), obj("api-key", PAYMENTS, "api-key")]

    runs = [
        fetch(both, token_file),  # success
        fetch([*both, obj("gone", PAYMENTS, "gone")], token_file),  # read, then not written because of a 404
        fetch([*both, obj("denied", SHARED, "api-key")], token_file),  # read, then a 403 in the other vault
        fetch(both, unfederated),  # token exchange refused
    ]

    assert [r.code for r in runs] == [0, 1, 1, 1]
    forbidden = [*values.values(), token_file.read_text(), unfederated.read_text()]
    for run in runs:
        for secret in forbidden:
            assert secret not in run.output
            assert secret[:24] not in run.output


def test_unreachable_token_endpoint(fetch: Fetcher, kv: ScriptedKeyVault, token_file: Path) -> None:
    kv.seed(PAYMENTS, {"db-password": "x"})
    run = fetch(
        [obj("db-password", PAYMENTS, "db-password")],
        token_file,
        AZURE_AUTHORITY_HOST=f"https://127.0.0.1:{free_port()}",
        KVINJECT_FETCH_RETRIES="1",
    )
    assert run.code == 1
    assert run.termination_log == (
        "db-password (payments-kv/db-password): token exchange failed: Microsoft Entra ID unreachable: "
        "ServiceRequestError (connection refused) after 2 attempts\n"
    )


# --------------------------------------------------------------------------------------
# The refresh sidecar: `kvinject fetch --refresh` (kvinject.io/refresh)
# --------------------------------------------------------------------------------------

RETRY_AFTER = 3
VALUES = ("first-value-\u00e9", "second-value", "third-value")  # never to be printed


class Sidecar:
    """`kvinject fetch --refresh` (the refresh sidecar) over a directory the init container filled."""

    def __init__(self, fetch: Fetcher, objects: list[dict[str, str]], token: Path, out: Path) -> None:
        self.out = out
        self.env = fetch.env(objects, token, out)
        self.log = out.parent / "sidecar.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "webhook.fetch", "--refresh", "2s"],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"the sidecar exited with {self.process.returncode}:\n{self.log.read_text()}")

    def wait_for_content(self, alias: str, content: bytes) -> None:
        wait_for(
            lambda: (self.out / alias).read_bytes() == content,
            f"{alias} to be swapped",
            alive=self.alive,
            context=lambda: self.log.read_text()[-2000:],
        )

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


@pytest.fixture
def sidecars() -> Iterator[list[Sidecar]]:
    running: list[Sidecar] = []
    yield running
    for sidecar in running:
        if sidecar.process.poll() is None:
            sidecar.process.kill()
            sidecar.process.wait()


def test_new_versions_are_swapped_in_and_throttling_is_honoured(
    fetch: Fetcher, kv: ScriptedKeyVault, token_file: Path, sidecars: list[Sidecar]
) -> None:
    kv.seed(PAYMENTS, {"db-password": VALUES[0]})
    pinned = kv.seed(SHARED, {"legacy": "pinned-value"})["legacy"]
    kv.grant(PAYMENTS, CLIENT_ID, "get")
    kv.grant(SHARED, CLIENT_ID, "get")
    objects = [obj("db-password", PAYMENTS, "db-password"), obj("legacy", SHARED, "legacy", version=pinned)]
    first = fetch(objects, token_file)  # kvinject-fetch, before the sidecar starts
    assert first.code == 0, first.stderr

    sidecar = Sidecar(fetch, objects, token_file, first.out)
    sidecars.append(sidecar)
    before = os.stat(first.out / "db-password").st_ino
    kv.seed(PAYMENTS, {"db-password": VALUES[1]})
    sidecar.wait_for_content("db-password", VALUES[1].encode())
    assert os.stat(first.out / "db-password").st_ino != before  # renamed into place, not rewritten

    kv.throttle(PAYMENTS, 2, retry_after=RETRY_AFTER)
    kv.seed(PAYMENTS, {"db-password": VALUES[2]})
    sidecar.wait_for_content("db-password", VALUES[2].encode())
    assert sidecar.stop() == 0

    reads = [r for r in kv.records if r.principal == CLIENT_ID and r.path.rstrip("/") == "/secrets/db-password"]
    statuses = [r.status for r in reads]
    assert statuses.count(429) == 2, statuses
    first_429 = statuses.index(429)
    # Each request after a 429 came at least Retry-After later (a lower bound: a slow machine only adds to it).
    after = reads[first_429 + 1 : first_429 + 3]
    for throttled, following in zip(reads[first_429 : first_429 + 2], after, strict=True):
        assert throttled.status == 429
        assert following.at - throttled.at >= RETRY_AFTER - 0.05
    assert reads[first_429 + 2].status == 200
    # The pinned object was read once, by kvinject-fetch.
    assert [r.status for r in kv.records if r.principal == CLIENT_ID and r.vault == SHARED] == [200]
    assert (first.out / "legacy").read_bytes() == b"pinned-value"

    termination = Path(sidecar.env["KVINJECT_TERMINATION_LOG"]).read_text()
    assert "2 file update(s)" in termination and "2 throttled" in termination, termination
    output = sidecar.log.read_text() + termination
    assert "waits at least 3s (Retry-After)" in output
    assert not any(value in output for value in VALUES)
    assert sorted(p.name for p in first.out.iterdir()) == ["db-password", "legacy"]  # no temp file left
