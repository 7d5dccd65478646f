"""The `kvinject` console script: `kvinject fetch` without loading the server.

`kvinject fetch` runs in the kvinject-fetch image, which has only the base dependencies (no web server, no
Kubernetes client, no pydantic). webhook.cli imports all of those at the top, so `fetch` is dispatched here
before webhook.cli is imported; every other command goes to webhook.cli.
"""

from __future__ import annotations

import sys

FETCH = "fetch"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == [FETCH]:
        from webhook.fetch.main import main as fetch_main

        code: int = fetch_main(args[1:])
        return code
    try:
        from webhook.cli import main as cli_main
    except ModuleNotFoundError as exc:  # the kvinject-fetch image, or `pip install kvinject` without [serve]
        print(
            f"kvinject: this installation has only `kvinject fetch` ({exc.name} is not installed); "
            "the other commands need `pip install 'kvinject[serve]'` or the kvinject image",
            file=sys.stderr,
        )
        return 2
    code = cli_main(args)
    return code
