"""The command line as an operator meets it: --version, help on every flag with its KVINJECT_* variable, the
environment `fetch` reads, exit 2 when the API cannot be reached, and `serve`'s start-up summary and log format."""

from __future__ import annotations

import argparse
import json
import re
import socket
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import httpx
import orjson
import pytest
import yaml

from tests.cli.test_mutate_cli import CLUSTER, kvinject
from tests.harness import EXAMPLES, TENANT_ID, ServeProcess, admission_review, controller_pod
from webhook import names
from webhook.cli import parser
from webhook.providers.azure import names as azure_names
from webhook.providers.vault import names as vault_names
from webhook.settings import Settings


def subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_version_is_the_package_metadata() -> None:
    result = kvinject("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"kvinject {version('kvinject')}"


@pytest.mark.parametrize("command", list(subcommands()))
def test_every_flag_has_help(command: str) -> None:
    sub = subcommands()[command]
    options = [a for a in sub._actions if a.option_strings or a.dest != "help"]
    assert all(a.help and a.help.strip() for a in options), [a.dest for a in options if not a.help]
    shown = kvinject(command, "--help")
    assert shown.returncode == 0
    for action in options:
        assert (action.option_strings or [action.dest])[-1] in shown.stdout


# Flag -> the Settings field it overrides, per subcommand; the help must name each field's variable.
FLAG_SETTINGS = {
    "serve": {
        "--cluster": "cluster_file",
        "--kubeconfig": "kubeconfig",
        "--tenant-id": "tenant_id",
        "--host": "host",
        "--port": "port",
        "--cert-file": "cert_file",
        "--key-file": "key_file",
        "--log-level": "log_level",
        "--log-format": "log_format",
    },
    "mutate": {"--cluster": "cluster_file", "--kubeconfig": "kubeconfig", "--tenant-id": "tenant_id"},
    "report": {"--cluster": "cluster_file", "--kubeconfig": "kubeconfig", "--tenant-id": "tenant_id"},
}


def flag_help(text: str, flag: str) -> str:
    """The help paragraph of one flag in argparse's output, joined onto one line."""
    match = re.search(rf"^  (?:-\w[ ,\w]*, )?{re.escape(flag)}\b.*?(?=^  -|^\S|\Z)", text, re.M | re.S)
    assert match, f"{flag} not in help"
    return " ".join(match.group(0).split())


@pytest.mark.parametrize("command", list(FLAG_SETTINGS))
def test_help_names_the_environment_of_each_flag(command: str) -> None:
    shown = kvinject(command, "--help").stdout
    for flag, field in FLAG_SETTINGS[command].items():
        assert f"env KVINJECT_{field.upper()}" in flag_help(shown, flag), flag


def test_serve_help_lists_every_setting() -> None:
    shown = kvinject("serve", "--help").stdout
    missing = [f for f in Settings.model_fields if f"KVINJECT_{f.upper()}" not in shown]
    assert not missing


def test_fetch_help_lists_the_environment_it_reads() -> None:
    shown = kvinject("fetch", "--help").stdout
    # Every environment variable name the init container's code knows (ENV_PREFIX is an annotation prefix).
    constants = [getattr(m, n) for m in (names, azure_names, vault_names) for n in dir(m) if n.startswith("ENV_")]
    variables = [v for v in constants if re.fullmatch(r"[A-Z][A-Z_]+", v)]
    assert len(variables) >= 19
    assert [v for v in variables if not re.search(rf"^  {v} ", shown, re.M)] == []


# -- The API cannot be reached --------------------------------------------------------------------------


@pytest.fixture
def dead_kubeconfig(tmp_path: Path) -> Iterator[Path]:
    """A kubeconfig naming a loopback port that is bound but not listening: every connect is refused."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
            "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        }
        path = tmp_path / "kubeconfig"
        path.write_text(yaml.safe_dump(config))
        yield path


@pytest.mark.parametrize(
    "args",
    [["mutate", str(EXAMPLES / "deployment-csi.yaml")], ["report"], ["report", "-o", "json"]],
    ids=["mutate", "report", "report-json"],
)
def test_unreachable_api_is_unusable_not_a_denial(dead_kubeconfig: Path, args: list[str]) -> None:
    result = kvinject(*args, "--kubeconfig", str(dead_kubeconfig))
    assert result.returncode == 2, result.stderr
    assert "cannot reach the API server at https://127.0.0.1:" in result.stderr
    assert "denied" not in result.stderr and result.stdout == ""
    assert "not-a-real-token" not in result.stderr


def test_report_from_a_cluster_file(tmp_path: Path) -> None:
    pod = controller_pod(labels={"app": "x", names.INJECT_LABEL: "yes"})
    pod["metadata"].update(name="x", namespace="payments")
    f = tmp_path / "cluster.yaml"
    f.write_text(Path(CLUSTER).read_text() + "\n---\n" + yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", **pod}))
    result = kvinject("report", "--cluster", str(f), "-o", "json")
    assert result.returncode == 0, result.stderr
    (finding,) = json.loads(result.stdout)["findings"]
    assert (finding["name"], finding["effect"], finding["reason"]) == ("x", "warning", "not-opted-in")


# -- serve: start-up summary and one log format -------------------------------------------------------------


def serve_logs(tmp_path: Path, log_format: str | None) -> list[str]:
    env = {"KVINJECT_TENANT_ID": TENANT_ID, "KVINJECT_ENFORCEMENT": "warn"}
    if log_format:
        env["KVINJECT_LOG_FORMAT"] = log_format
    server = ServeProcess(tmp_path, ["--cluster", CLUSTER], env, log_level="DEBUG", inherit_kvinject_env=False)
    with server:
        review = admission_review(controller_pod())
        answered = httpx.post(
            server.mutate_url,
            content=orjson.dumps(review),
            headers={"Content-Type": "application/json"},
            verify=server.trust(),
            timeout=30,
        )
        assert answered.status_code == 200
        server.wait_until(lambda: "caches synced" in server.logs(), "the caches-synced line")
    command, *lines = server.logs().splitlines()  # the harness's first line: the command it ran
    assert command.startswith("$ ")
    return [line for line in lines if line.strip()]


def test_json_logs_are_one_object_per_line_uvicorn_included(tmp_path: Path) -> None:
    lines = serve_logs(tmp_path, "json")
    records = [json.loads(line) for line in lines]  # every line, or this raises
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    loggers = {r["logger"] for r in records}
    assert "uvicorn.error" in loggers and "kvinject" in loggers, loggers
    (summary,) = [r["message"] for r in records if "starting on" in r["message"]]
    parts = (f"tenant={TENANT_ID}", "cloud=AzurePublicCloud", "enforcement=warn", "live-verification=off")
    # The harness judges what is not kvinject's with enforce (tests/harness/serve.py).
    for part in (*parts, "not-opted-in-enforcement=enforce"):
        assert part in summary
    assert f"cluster=file {CLUSTER}" in summary
    assert "restart-on-change=off (needs the API, not a --cluster file)" in summary
    assert any(r["message"].startswith("caches synced") for r in records)


def test_text_logs_share_one_format(tmp_path: Path) -> None:
    lines = serve_logs(tmp_path, None)
    text = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+ ")
    assert [line for line in lines if not text.match(line)] == []
    assert any(" uvicorn.error " in line for line in lines)
    assert any("starting on" in line and "enforcement=warn" in line for line in lines)
