"""What a test does when a prerequisite (built binaries, an isolated network) is missing."""

from __future__ import annotations

import os
from typing import NoReturn


def unavailable(message: str) -> NoReturn:
    """Skip locally; fail under CI (CI=true), where every prerequisite must be there."""
    import pytest  # here, so that the harness imports without pytest (bench/)

    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
