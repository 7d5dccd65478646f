"""The reloader keeps the current certificate while the files on disk are half written."""

from __future__ import annotations

from pathlib import Path

from webhook import certs
from webhook.server import CertReloader, tls_context


def test_reload_only_on_change_and_only_valid_pairs(tmp_path: Path) -> None:
    issued = certs.issue(tmp_path, ["a"])
    ctx = tls_context(issued.cert_file, issued.key_file)
    reloader = CertReloader(ctx, issued.cert_file, issued.key_file, 1.0)
    assert reloader.check() is False
    issued.key_file.write_text("garbage")  # a rotation caught half-way
    assert reloader.check() is False and reloader.reloads == 0
    certs.issue(tmp_path, ["a"])
    assert reloader.check() is True and reloader.reloads == 1


def test_context_refuses_tls_below_1_2(tmp_path: Path) -> None:
    import ssl

    issued = certs.issue(tmp_path, ["a"])
    assert tls_context(issued.cert_file, issued.key_file).minimum_version == ssl.TLSVersion.TLSv1_2
