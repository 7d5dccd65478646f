"""Help text derived from the code: each flag's KVINJECT_* variable from the Settings field it sets, and the
environment `kvinject fetch` reads from the names the init container uses."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Iterable

from webhook.fetch.main import DESCRIPTION
from webhook.fetch.main import epilog as fetch_main_epilog
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


FETCH_DESCRIPTION = DESCRIPTION  # `kvinject fetch`'s own, for webhook.cli's subcommand


def fetch_epilog() -> str:
    """The environment `kvinject fetch` reads (its own parser's epilog: one text however fetch is reached)."""
    return fetch_main_epilog()


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
