"""The Azure cloud setting: one choice drives the generated class, the init container and live verification."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.harness import CLIENT_ID, ROOT, TENANT_ID
from webhook import contract, spc
from webhook.identity import Identity
from webhook.model import ServiceAccount
from webhook.names import PREFIX, TOKEN_DIR, TOKEN_VOLUME
from webhook.plan import init as plan_init
from webhook.providers.azure import INSTANCE as AZURE
from webhook.providers.azure import provider_view
from webhook.settings import Settings

WHO = Identity(CLIENT_ID, TENANT_ID)
SA = ServiceAccount("payments", "api", "uid-1", CLIENT_ID, TENANT_ID)
STACK = {
    "name": "AzureStackCloud",
    "activeDirectoryEndpoint": "https://login.stack.example/adfs/",
    "keyVaultDNSSuffix": "vault.stack.example",
    "resourceManagerEndpoint": "https://management.stack.example/",
}


def env_file(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "azurestackcloud.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def generated(settings: Settings) -> dict:
    wanted = contract.parse_annotations({PREFIX + "secret-db": "db"}, "payments-kv")
    return spc.generated("azure", AZURE.class_parameters(wanted, WHO, settings), wanted, "payments", SA)


@pytest.mark.parametrize(
    ("name", "authority", "suffix"),
    [
        ("AzureUSGovernmentCloud", "https://login.microsoftonline.us/", "vault.usgovcloudapi.net"),
        ("AzureChinaCloud", "https://login.chinacloudapi.cn/", "vault.azure.cn"),
        ("azurechinacloud", "https://login.chinacloudapi.cn/", "vault.azure.cn"),
        ("AzurePublicCloud", "https://login.microsoftonline.com/", "vault.azure.net"),
        ("AzureGermanCloud", "https://login.microsoftonline.de/", "vault.microsoftazure.de"),
    ],
    ids=["us-government", "china", "case-insensitive", "public-by-name", "germany"],
)
def test_a_named_cloud_sets_every_reader(name: str, authority: str, suffix: str) -> None:
    settings = Settings(cloud_name=name)
    assert (settings.authority_host, settings.vault_dns_suffix) == (authority, suffix)
    params = generated(settings)["spec"]["parameters"]
    assert params["cloudName"] == name and "cloudEnvFileName" not in params
    env = dict(AZURE.init_spec(WHO, settings).env)
    assert (env["AZURE_AUTHORITY_HOST"], env["KVINJECT_VAULT_DNS_SUFFIX"]) == (authority, suffix)
    # The provider reads the class kvinject wrote as naming that cloud.
    assert provider_view.read(params).cloud_name


def test_no_cloud_leaves_the_public_cloud_unnamed() -> None:
    settings = Settings()
    params = generated(settings)["spec"]["parameters"]
    assert "cloudName" not in params and "cloudEnvFileName" not in params
    assert (settings.authority_host, settings.vault_dns_suffix) == (
        "https://login.microsoftonline.com/",
        "vault.azure.net",
    )


def test_an_environment_file_is_a_custom_cloud_for_kvinject_and_the_provider(tmp_path: Path) -> None:
    path = env_file(tmp_path, STACK)
    settings = Settings(cloud_env_file=path)
    assert settings.cloud_name == "AzureStackCloud"
    assert (settings.authority_host, settings.vault_dns_suffix) == (
        "https://login.stack.example/adfs/",
        "vault.stack.example",
    )
    params = generated(settings)["spec"]["parameters"]
    assert (params["cloudName"], params["cloudEnvFileName"]) == ("AzureStackCloud", str(path))
    view = provider_view.read(params)
    assert (view.cloud_name, view.cloud_env_file_name) == ("AzureStackCloud", str(path))
    # Explicit values that agree with the file are accepted.
    Settings(cloud_env_file=path, cloud_name="AzureStackCloud", vault_dns_suffix="vault.stack.example.")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"cloud_name": "Mars"}, "KVINJECT_CLOUD_NAME='Mars' is not a cloud the Azure provider knows"),
        ({"cloud_name": "AzureStackCloud"}, "needs KVINJECT_CLOUD_ENV_FILE"),
        (
            {"cloud_name": "AzureChinaCloud", "authority_host": "https://login.microsoftonline.com/"},
            "KVINJECT_AUTHORITY_HOST='https://login.microsoftonline.com/' disagrees with the cloud's",
        ),
        (
            {"cloud_name": "AzureChinaCloud", "vault_dns_suffix": "vault.azure.net"},
            "KVINJECT_VAULT_DNS_SUFFIX='vault.azure.net' disagrees",
        ),
        ({"init_ca_configmap": "Not_A_Name"}, "init_ca_configmap"),
    ],
    ids=["unknown-name", "stack-without-file", "authority-conflict", "suffix-conflict", "bad-configmap-name"],
)
def test_unusable_cloud_settings_are_refused(settings: dict, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(**settings)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read cloud environment file"),
        ("{not json", "is not JSON"),
        ("[]", "must hold a JSON object"),
        ({**STACK, "activeDirectoryEndpoint": "http://login.stack.example/"}, "must be an https URL"),
        ({**STACK, "keyVaultDNSSuffix": "https://vault.stack.example"}, "keyVaultDNSSuffix must be a DNS suffix"),
        ("x" * (64 * 1024 + 1), "larger than 65536 bytes"),
    ],
    ids=["missing", "not-json", "not-object", "http-authority", "url-suffix", "too-large"],
)
def test_unusable_environment_files_are_refused(tmp_path: Path, content: object, message: str) -> None:
    path = tmp_path / "missing.json" if content is None else env_file(tmp_path, content)
    with pytest.raises(ValidationError) as caught:
        Settings(cloud_env_file=path)
    assert message in str(caught.value)
    with pytest.raises(ValidationError):
        Settings(cloud_env_file=path, cloud_name="AzureChinaCloud")


def test_serve_refuses_unusable_cloud_settings_with_a_sentence(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "KVINJECT_CLOUD_NAME": "AzureStackCloud"}
    done = subprocess.run(
        [sys.executable, "-m", "webhook", "serve", "--cluster", "examples/cluster.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("kvinject: unusable settings: ")
    assert "KVINJECT_CLOUD_ENV_FILE" in done.stderr and "Traceback" not in done.stderr


def test_the_init_container_trusts_a_private_cloud_ca_from_a_configmap() -> None:
    spec = AZURE.init_spec(WHO, Settings(init_ca_configmap="cloud-ca"))
    assert dict(spec.env)["REQUESTS_CA_BUNDLE"] == f"{TOKEN_DIR}/ca.crt"
    pod = {"metadata": {}, "spec": {"containers": [{"name": "app", "image": "app"}]}}
    wanted = contract.parse_annotations({PREFIX + "mode": "init", PREFIX + "secret-db": "db"}, "payments-kv")
    ops = plan_init(pod, wanted, spec)
    volumes = next(op["value"] for op in ops if op["path"] == "/spec/volumes")
    token = next(v for v in volumes if v["name"] == TOKEN_VOLUME)
    assert token["projected"]["sources"][1] == {
        "configMap": {"name": "cloud-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    }
    without = AZURE.init_spec(WHO, Settings())
    assert "REQUESTS_CA_BUNDLE" not in dict(without.env) and without.token_sources == ()
