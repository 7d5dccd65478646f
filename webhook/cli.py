"""`kvinject serve | mutate | certs | fetch`: the command line."""

from __future__ import annotations

import argparse
import asyncio
import copy
import logging
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonpatch
import orjson
import yaml
from pydantic import ValidationError

from webhook import certs, review
from webhook.cluster import Cluster, ClusterError, load
from webhook.mutation import Mutator
from webhook.settings import Settings
from webhook.workloads import pod_from_template, template_of

if TYPE_CHECKING:
    from webhook.selfcert import SelfCert

EXIT_ALLOWED, EXIT_DENIED, EXIT_UNUSABLE = 0, 1, 2


class Unusable(Exception):
    """Input the command cannot work with (exit 2)."""


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        k: v
        for k, v in {
            "cluster_file": getattr(args, "cluster", None),
            "kubeconfig": getattr(args, "kubeconfig", None),
            "host": getattr(args, "host", None),
            "port": getattr(args, "port", None),
            "cert_file": getattr(args, "cert_file", None),
            "key_file": getattr(args, "key_file", None),
            "tenant_id": getattr(args, "tenant_id", None),
        }.items()
        if v is not None
    }
    return Settings(**overrides)


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _configure_logging(settings.log_level)
    for path in (settings.cert_file, settings.key_file) if settings.cert_mode == "files" else ():
        if not path.is_file():
            print(
                f"kvinject: {path} not found: run `kvinject certs` or set KVINJECT_CERT_FILE/KEY_FILE", file=sys.stderr
            )
            return EXIT_UNUSABLE
    try:
        cluster = load(settings.cluster_file, settings.kubeconfig)
        own_certificate = _own_certificate(settings) if settings.cert_mode == "self" else None
    except ClusterError as exc:
        print(f"kvinject: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    from webhook.app import create_app
    from webhook.server import serve

    not_ready = None
    if own_certificate is not None:
        keeper = own_certificate

        def not_ready(app: Any) -> str | None:
            loaded: bytes | None = getattr(getattr(app.state, "tls", None), "loaded", None)
            return keeper.not_ready(loaded)

    serve(create_app(settings, cluster, not_ready=not_ready), settings)
    return EXIT_ALLOWED


def _own_certificate(settings: Settings) -> SelfCert:
    """cert_mode self: the certificate keeper started, once it has written a serving certificate to serve."""
    from webhook.cluster.api import ApiObjects
    from webhook.selfcert import SelfCert

    keeper = SelfCert(ApiObjects.from_config(settings.kubeconfig), settings)
    keeper.start()
    log = logging.getLogger("webhook.selfcert")
    while not keeper.files_written.wait(10):
        log.warning("no serving certificate yet from Secret %s/%s", settings.pod_namespace, settings.cert_secret)
    return keeper


def _requests(docs: list[Any]) -> list[tuple[int, review.Request]]:
    """One admission request per pod-carrying document, with its index in `docs`."""
    result = []
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise Unusable(f"document {i + 1} is not an object")
        kind = doc.get("kind")
        if kind == "AdmissionReview":
            try:
                result.append((i, review.decode_review(orjson.dumps(doc))))
            except review.MalformedReview as exc:
                raise Unusable(f"document {i + 1}: {exc}") from None
            continue
        if kind == "Pod":
            pod = doc
        else:
            template = template_of(doc)
            if template is None:
                continue
            pod = pod_from_template(template, str((doc.get("metadata") or {}).get("name") or ""))
        namespace = (doc.get("metadata") or {}).get("namespace") or "default"
        uid = str(uuid.uuid4())
        raw = {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "namespace": namespace,
            "object": pod,
            "dryRun": True,
        }
        result.append(
            (
                i,
                review.Request(
                    uid=uid,
                    kind="Pod",
                    group="",
                    operation="CREATE",
                    namespace=namespace,
                    sub_resource="",
                    dry_run=True,
                    object=pod,
                    raw=raw,
                ),
            )
        )
    if not result:
        raise Unusable("no Pod, workload (Deployment, StatefulSet, DaemonSet, Job, CronJob) or AdmissionReview found")
    return result


def _mutated(doc: dict[str, Any], request: review.Request, ops: list[dict[str, Any]]) -> Any:
    if doc.get("kind") == "AdmissionReview":
        doc = {"kind": "Pod", "apiVersion": "v1", **(request.object or {})}
    pod = request.object if doc.get("kind") != "Pod" else doc
    patched = jsonpatch.apply_patch(pod, ops)
    if doc.get("kind") in ("Pod", None):
        return patched
    result = copy.deepcopy(doc)
    template = template_of(result)
    assert template is not None
    patched["metadata"].pop("generateName", None)
    if "generateName" in (template.get("metadata") or {}):
        patched["metadata"]["generateName"] = template["metadata"]["generateName"]
    template["metadata"], template["spec"] = patched["metadata"], patched["spec"]
    return result


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the SecretProviderClass `objects` parameter) in block style."""


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)


def dump_yaml(docs: list[Any]) -> str:
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False)


def cmd_mutate(args: argparse.Namespace) -> int:
    _configure_logging("WARNING")
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
        requests = _requests(docs)
        settings = _settings(args)
        cluster: Cluster = load(settings.cluster_file, settings.kubeconfig)
    except (OSError, yaml.YAMLError, Unusable, ClusterError) as exc:
        print(f"kvinject: unusable input: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE

    mutator = Mutator(settings, cluster)
    out: list[Any] = list(docs)
    classes: list[dict[str, Any]] = []
    status = EXIT_ALLOWED
    for index, request in requests:
        outcome = asyncio.run(mutator.mutate(request))
        response = outcome.response["response"]
        if not response["allowed"]:
            print(response["status"]["message"], file=sys.stderr)
            status = EXIT_DENIED
            continue
        for warning in response.get("warnings", []):
            print(f"warning: {warning}", file=sys.stderr)
        out[index] = outcome.ops if args.patch else _mutated(docs[index], request, outcome.ops)
        if outcome.provider_class is not None and outcome.provider_class not in classes:
            classes.append(outcome.provider_class)
    if status == EXIT_ALLOWED:
        sys.stdout.write(dump_yaml(out + classes))
    return status


def cmd_certs(args: argparse.Namespace) -> int:
    names = certs.service_names(args.service, args.namespace) + list(args.dns or [])
    issued = certs.issue(Path(args.out), names, ips=args.ip or ["127.0.0.1"], days=args.days)
    print(f"wrote {issued.ca_file}, {issued.cert_file}, {issued.key_file}", file=sys.stderr)
    print(issued.ca_bundle)
    return EXIT_ALLOWED


def cmd_fetch(args: argparse.Namespace) -> int:
    # Imported here: only the init container needs the Azure SDKs.
    from webhook import fetch

    code: int = fetch.main([])
    return code


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kvinject", description="Azure Key Vault injection webhook")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the webhook over HTTPS")
    serve.add_argument("--cluster", type=Path, help="read cluster objects from this YAML file instead of the API")
    serve.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster, then ~/.kube/config)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--cert-file", type=Path)
    serve.add_argument("--key-file", type=Path)
    serve.add_argument("--tenant-id", help="default Entra tenant for ServiceAccounts without one")
    serve.set_defaults(func=cmd_serve)

    mutate = sub.add_parser("mutate", help="preview the mutation of a Pod, workload or AdmissionReview")
    mutate.add_argument("file", help="YAML/JSON file, or - for standard input")
    mutate.add_argument("--cluster", type=Path, help="cluster objects YAML (default: the API via kubeconfig)")
    mutate.add_argument("--kubeconfig")
    mutate.add_argument("--tenant-id")
    mutate.add_argument("--patch", action="store_true", help="print the JSON patch instead of the object")
    mutate.set_defaults(func=cmd_mutate)

    c = sub.add_parser("certs", help="write a CA and a serving certificate; print the caBundle")
    c.add_argument("--out", default="certs")
    c.add_argument("--service", default="kvinject")
    c.add_argument("--namespace", default="kvinject")
    c.add_argument("--dns", action="append", help="extra DNS SAN (repeatable)")
    c.add_argument("--ip", action="append", help="IP SAN (repeatable; default 127.0.0.1)")
    c.add_argument("--days", type=int, default=365)
    c.set_defaults(func=cmd_certs)

    f = sub.add_parser(
        "fetch", help="init-container entrypoint: write the Key Vault objects in KVINJECT_OBJECTS to files"
    )
    f.set_defaults(func=cmd_fetch)
    return p


def _settings_problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {str(e['msg']).removeprefix('Value error, ')}"
        for e in exc.errors()
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ValidationError as exc:  # KVINJECT_* or flags: a sentence, never a trace
        print(f"kvinject: unusable settings: {_settings_problems(exc)}", file=sys.stderr)
        return EXIT_UNUSABLE
    return code


if __name__ == "__main__":
    sys.exit(main())
