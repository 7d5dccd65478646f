"""Help text derived from the code: each flag's KVINJECT_* variable from the Settings field it sets, and the
environment `kvinject fetch` reads from the names the init container uses."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Iterable

from webhook import providers
from webhook.fetch.config import ENVIRONMENT as FETCH_KVINJECT_ENVIRONMENT
from webhook.settings import Settings


def env_name(field: str) -> str:
    """The variable of a Settings field (pydantic-settings: the prefix and the field's name, upper-cased)."""
    if field not in Settings.model_fields:
        raise KeyError(f"no setting {field}")
    prefix = str(Settings.model_config.get("env_prefix") or "")
    return f"{prefix}{field}".upper()


def with_env(text: str, field: str) -> str:
    return f"{text} (env {env_name(field)})"


def _default(field: str) -> str:
    info = Settings.model_fields[field]
    value = info.get_default(call_default_factory=True)
    if value is None or value == "" or value == {} or value == frozenset():
        return "unset"
    return str(getattr(value, "value", value))


def settings_epilog(fields: Iterable[str], title: str) -> str:
    """Every setting a command reads, as KVINJECT_* variables with their defaults."""
    rows = [(env_name(f), _default(f)) for f in fields]
    width = max(len(n) for n, _ in rows)
    lines = [f"  {name.ljust(width)}  default: {default}" for name, default in rows]
    return f"{title}\n" + "\n".join(lines)


def all_settings() -> list[str]:
    return list(Settings.model_fields)


def fetch_epilog() -> str:
    """The environment `kvinject fetch` reads: kvinject's own and the store's (the webhook sets all of them)."""
    rows = {**FETCH_KVINJECT_ENVIRONMENT, **providers.default().environment_help}
    width = max(len(n) for n in rows)
    lines = [f"  {name.ljust(width)}  {text}" for name, text in rows.items()]
    return (
        "environment (set by the webhook on the kvinject-fetch init container):\n"
        + "\n".join(lines)
        + "\n\nexit codes: 0 every object written, 1 a read failed (reasons in the termination log),"
        " 2 unusable environment"
    )


def paragraphs(*texts: str) -> str:
    """A description of several paragraphs, wrapped (the formatter keeps line breaks as written)."""
    return "\n\n".join(textwrap.fill(t, 100) for t in texts)


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's table as written; shows defaults where a flag has one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, "", argparse.SUPPRESS) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text
