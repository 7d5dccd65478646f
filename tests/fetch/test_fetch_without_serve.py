"""`kvinject fetch` as the kvinject-fetch image runs it: through the console script, with the serve extra's packages
(web server, Kubernetes client, pydantic, ...) absent. A real token exchange and read against the Entra and Key Vault
doubles; the other commands say what is missing instead of failing with a traceback.

(The image itself is checked in tests/node: its packages in test_images.py, init mode on the node in
test_secrets_on_node.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import CLIENT_ID, ROOT, TENANT_ID, VAULT, bundle
from tests.harness.doubles.entra import FakeEntra, TokenIssuer
from tests.harness.doubles.keyvault import FakeKeyVault

pytestmark = pytest.mark.e2e  # the Azure doubles

# Top-level modules of the serve extra and of what only it brings (requirements/serve.txt minus fetch.txt).
ABSENT = [
    "fastapi",
    "starlette",
    "uvicorn",
    "httptools",
    "uvloop",
    "watchfiles",
    "websockets",
    "kubernetes",
    "pydantic",
    "pydantic_core",
    "pydantic_settings",
    "prometheus_client",
    "jsonpatch",
    "aiohttp",
]

# The console script's entry point with those modules made unimportable, as in the image; prints the top-level
# modules loaded by the end, so the test sees what `kvinject fetch` really imported.
RUN_WITHOUT_SERVE = """
import importlib.abc, json, sys
absent = set(sys.argv[1].split())

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in absent:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Absent())
from webhook.console import main
code = main(sys.argv[2:])
sys.stdout.write("\\nLOADED " + json.dumps(sorted({m.split(".")[0] for m in sys.modules})) + "\\n")
sys.exit(code)
"""


def kvinject(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str, set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_SERVE, " ".join(ABSENT), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out, _, loaded = done.stdout.rpartition("\nLOADED ")
    return done.returncode, out, done.stderr, set(json.loads(loaded))


def test_fetch_reads_and_writes_without_the_serve_packages(
    entra: FakeEntra, key_vault: FakeKeyVault, sa_issuer: TokenIssuer, tmp_path: Path
) -> None:
    entra.trust_issuer(sa_issuer.issuer, sa_issuer.source())
    entra.add_federated_credential(sa_issuer.credential(TENANT_ID, CLIENT_ID, "payments", "api"))
    key_vault.seed(VAULT, {"db-password": "from-the-fetch-image"})
    key_vault.grant(VAULT, CLIENT_ID, "get")
    token = tmp_path / "token"
    token.write_text(sa_issuer.token("payments", "api"))
    out = tmp_path / "secrets"
    out.mkdir()
    objects = [{"alias": "db-password", "vault": VAULT, "name": "db-password", "type": "secret", "version": ""}]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "KVINJECT_"))},
        "KVINJECT_OBJECTS": json.dumps(objects),
        "KVINJECT_OUTPUT_DIR": str(out),
        "KVINJECT_VAULT_URLS": json.dumps({VAULT: key_vault.vault_url(VAULT)}),
        "KVINJECT_TERMINATION_LOG": str(tmp_path / "termination-log"),
        "AZURE_CLIENT_ID": CLIENT_ID,
        "AZURE_TENANT_ID": TENANT_ID,
        "AZURE_FEDERATED_TOKEN_FILE": str(token),
        "AZURE_AUTHORITY_HOST": entra.authority,
        "REQUESTS_CA_BUNDLE": str(bundle(tmp_path / "ca.pem", entra.ca_file, key_vault.ca_file)),
        "NO_PROXY": "127.0.0.1,localhost",
    }

    code, _, stderr, loaded = kvinject("fetch", env=env)

    assert code == 0, stderr
    assert (out / "db-password").read_bytes() == b"from-the-fetch-image"
    assert "azure" in loaded and not loaded & set(ABSENT)
    assert not loaded & {"webhook.cli", "webhook.app"}  # top-level names: webhook's own are checked by lint-imports


@pytest.mark.parametrize(
    ("args", "code", "printed"),
    [
        pytest.param(["fetch", "--help"], 0, "KVINJECT_OBJECTS", id="fetch-help-lists-its-environment"),
        pytest.param(["--help"], 2, "this installation has only `kvinject fetch`", id="other-commands-say-why-not"),
        pytest.param(["serve"], 2, "this installation has only `kvinject fetch`", id="serve-says-why-not"),
    ],
)
def test_the_console_script_without_the_serve_packages(args: list[str], code: int, printed: str) -> None:
    got, stdout, stderr, loaded = kvinject(*args)
    assert (got, "Traceback" in stderr) == (code, False), stderr
    assert printed in stdout + stderr
    assert not loaded & set(ABSENT)
