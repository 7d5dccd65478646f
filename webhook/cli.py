"""`kvinject serve | mutate | report | certs | fetch`: the command line (the commands live in webhook.commands)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from webhook import certs
from webhook.cluster import ClusterError, load
from webhook.commands import helptext, logs, mutate, report, startup
from webhook.commands.common import EXIT_ALLOWED, EXIT_UNUSABLE
from webhook.policy import Enforcement
from webhook.settings import Settings

if TYPE_CHECKING:
    from webhook.restarter import Restarter
    from webhook.selfcert import SelfCert


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
            "log_level": getattr(args, "log_level", None),
            "log_format": getattr(args, "log_format", None),
        }.items()
        if v is not None
    }
    return Settings(**overrides)


def _configure_logging(level: str, fmt: str = "text") -> None:
    logs.configure(level, fmt)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _configure_logging(settings.log_level, settings.log_format)
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

    logging.getLogger("kvinject").info("%s", startup.summary(settings))
    startup.report_sync(cluster)
    not_ready = None
    if own_certificate is not None:
        keeper = own_certificate

        def not_ready(app: Any) -> str | None:
            loaded: bytes | None = getattr(getattr(app.state, "tls", None), "loaded", None)
            return keeper.not_ready(loaded)

    serve(create_app(settings, cluster, not_ready=not_ready, restarter=_restarter(settings)), settings)
    return EXIT_ALLOWED


def _restarter(settings: Settings) -> Restarter | None:
    """restart-on-change, when on and kvinject reads the API (a --cluster file has no pods to watch)."""
    if not settings.restart_on_change or settings.cluster_file is not None:
        return None
    from webhook.cluster.api import ApiObjects
    from webhook.restarter import Restarter

    return Restarter(ApiObjects.from_config(settings.kubeconfig), settings)


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


def cmd_mutate(args: argparse.Namespace) -> int:
    _configure_logging("WARNING")
    # A preview judges policy only: live verification would request tokens (a write).
    return mutate.run(args.file, _settings(args).model_copy(update={"live_verify": False}), args.patch)


def cmd_report(args: argparse.Namespace) -> int:
    _configure_logging("WARNING")
    settings = _settings(args).model_copy(update={"live_verify": False})  # read-only: no token requests
    return report.run(settings, args.namespace, args.enforcement, args.output)


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


# Settings a preview reads besides its flags (what the server would decide with).
_POLICY_SETTINGS = (
    "tenant_id",
    "enforcement",
    "relaxable_namespaces",
    "allow_node_identity",
    "allow_pod_identity",
    "allow_volume_attributes",
    "allow_node_publish_secret",
    "init_image",
    "init_volume_size",
    "init_ca_configmap",
    "refresh_sidecars",
    "refresh_min_seconds",
    "cloud_name",
    "cloud_env_file",
    "authority_host",
    "vault_dns_suffix",
    "vault_urls",
    "api_timeout_seconds",
)


def _cluster_flags(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--cluster",
        type=Path,
        metavar="FILE",
        help=helptext.with_env("read cluster objects from this YAML file instead of the API", "cluster_file"),
    )
    source.add_argument(
        "--kubeconfig",
        metavar="FILE",
        help=helptext.with_env(
            "kubeconfig to reach the API (default: in-cluster, then $KUBECONFIG or ~/.kube/config)", "kubeconfig"
        ),
    )
    p.add_argument(
        "--tenant-id",
        metavar="ID",
        help=helptext.with_env("default Entra ID tenant for ServiceAccounts without one", "tenant_id"),
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kvinject",
        description="Azure Key Vault secrets for Kubernetes pods: the admission webhook and its tools.",
        formatter_class=helptext.Formatter,
        epilog="Every KVINJECT_* setting is read from the environment; a flag overrides its variable.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {startup.package_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the webhook over HTTPS",
        description="Run the mutating and validating admission webhook over HTTPS.",
        formatter_class=helptext.Formatter,
        epilog=helptext.settings_epilog(helptext.all_settings(), "settings (environment):"),
    )
    _cluster_flags(serve)
    serve.add_argument("--host", help=helptext.with_env("address to listen on", "host"))
    serve.add_argument("--port", type=int, help=helptext.with_env("port to listen on", "port"))
    serve.add_argument(
        "--cert-file", type=Path, metavar="FILE", help=helptext.with_env("serving certificate (PEM)", "cert_file")
    )
    serve.add_argument(
        "--key-file", type=Path, metavar="FILE", help=helptext.with_env("its private key (PEM)", "key_file")
    )
    serve.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help=helptext.with_env("log level", "log_level"),
    )
    serve.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        help=helptext.with_env("text, or json: one JSON object per line for every log line", "log_format"),
    )
    serve.set_defaults(func=cmd_serve)

    mutate = sub.add_parser(
        "mutate",
        help="preview the mutation of a Pod, workload, List or AdmissionReview",
        description=helptext.paragraphs(
            "Print what kvinject's /mutate would make of each Pod, workload (Deployment, StatefulSet, DaemonSet,"
            " ReplicaSet, Job, CronJob), `kind: List` item (kubectl get -o yaml) or Pod AdmissionReview, and the"
            " SecretProviderClasses it would generate. Read-only: nothing is created. Policy only: no live"
            " verification.",
            "exit codes: 0 allowed (output on stdout), 1 denied (reasons on stderr), 2 unusable (input,"
            " settings, or the API cannot be reached)",
        ),
        formatter_class=helptext.Formatter,
        epilog=helptext.settings_epilog(_POLICY_SETTINGS, "also read (environment):"),
    )
    mutate.add_argument("file", help="YAML or JSON file, or - for standard input")
    _cluster_flags(mutate)
    mutate.add_argument(
        "--patch",
        action="store_true",
        help="print the JSON patch (relative to each object as given) instead of the mutated object",
    )
    mutate.set_defaults(func=cmd_mutate)

    rep = sub.add_parser(
        "report",
        help="read-only impact report: what kvinject would deny in a cluster, and why",
        description=helptext.paragraphs(
            "List every existing Pod and SecretProviderClass that kvinject would deny, with the reason, and pods"
            " that carry kvinject annotations without the opt-in label (they get nothing). Read-only: needs"
            " get/list only (see docs/report.md).",
            "exit codes: 0 nothing would be denied, 1 something would be denied, 2 unusable (the API cannot be"
            " reached, bad flags)",
        ),
        formatter_class=helptext.Formatter,
        epilog=helptext.settings_epilog(_POLICY_SETTINGS, "also read (environment):"),
    )
    _cluster_flags(rep)
    rep.add_argument("-n", "--namespace", default="", metavar="NS", help="one namespace only (default: all)")
    rep.add_argument(
        "--enforcement",
        choices=[m.value for m in Enforcement],
        help=(
            "judge every namespace as if in this mode, e.g. enforce to see everything enforcing would deny"
            f" (default: {helptext.env_name('enforcement')} for kvinject's pods,"
            f" {helptext.env_name('not_opted_in_enforcement')} for the others, and the namespaces' labels,"
            " as the webhook does)"
        ),
    )
    rep.add_argument("-o", "--output", choices=["table", "json"], default="table", help="a table, or JSON for tooling")
    rep.set_defaults(func=cmd_report)

    c = sub.add_parser(
        "certs",
        help="write a CA and a serving certificate; print the caBundle",
        description="Write ca.crt, tls.crt and tls.key for the webhook's Service; print the base64 caBundle.",
        formatter_class=helptext.Formatter,
    )
    c.add_argument("--out", default="certs", metavar="DIR", help="directory to write the files to")
    c.add_argument("--service", default="kvinject", help="the webhook's Service name")
    c.add_argument("--namespace", default="kvinject", help="the Service's namespace")
    c.add_argument("--dns", action="append", help="extra DNS SAN (repeatable)")
    c.add_argument("--ip", action="append", help="IP SAN (repeatable; default 127.0.0.1)")
    c.add_argument("--days", type=int, default=365, help="validity in days")
    c.set_defaults(func=cmd_certs)

    f = sub.add_parser(
        "fetch",
        help="init-container entrypoint: write the Key Vault objects in KVINJECT_OBJECTS to files",
        description=helptext.FETCH_DESCRIPTION,
        formatter_class=helptext.Formatter,
        epilog=helptext.fetch_epilog(),
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
