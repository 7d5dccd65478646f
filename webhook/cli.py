"""`kvinject serve | mutate | certs | fetch`: the command line."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

from webhook import certs
from webhook.cluster import ClusterError, load
from webhook.commands import mutate
from webhook.commands.common import EXIT_ALLOWED, EXIT_UNUSABLE
from webhook.settings import Settings


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
    for path in (settings.cert_file, settings.key_file):
        if not path.is_file():
            print(
                f"kvinject: {path} not found: run `kvinject certs` or set KVINJECT_CERT_FILE/KEY_FILE", file=sys.stderr
            )
            return EXIT_UNUSABLE
    try:
        cluster = load(settings.cluster_file, settings.kubeconfig)
    except ClusterError as exc:
        print(f"kvinject: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    from webhook.app import create_app
    from webhook.server import serve

    serve(create_app(settings, cluster), settings)
    return EXIT_ALLOWED


def cmd_mutate(args: argparse.Namespace) -> int:
    _configure_logging("WARNING")
    # A preview judges policy only: live verification would request tokens (a write).
    return mutate.run(args.file, _settings(args).model_copy(update={"live_verify": False}), args.patch)


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
