"""The annotation contract: every rule, every error message, all errors at once."""

from __future__ import annotations

import pytest

from webhook import contract
from webhook.contract import ContractError, EnvVar, Mode, Mounted, ObjectRef, ObjectType
from webhook.names import PREFIX

K = PREFIX


@pytest.mark.parametrize(
    ("text", "default_vault", "expected"),
    [
        ("db-password", "payments-kv", ObjectRef("payments-kv", "db-password")),
        ("secret:db-password", "payments-kv", ObjectRef("payments-kv", "db-password")),
        ("cert:api-tls", "payments-kv", ObjectRef("payments-kv", "api-tls", ObjectType.CERT)),
        ("key:signing", "payments-kv", ObjectRef("payments-kv", "signing", ObjectType.KEY)),
        ("shared-kv/legacy-token@0f3c9a", "payments-kv", ObjectRef("shared-kv", "legacy-token", version="0f3c9a")),
        ("cert:other-kv/tls@" + "a" * 32, None, ObjectRef("other-kv", "tls", ObjectType.CERT, "a" * 32)),
        ("abc/" + "x" * 127, None, ObjectRef("abc", "x" * 127)),
        ("a" * 24 + "/x", None, ObjectRef("a" * 24, "x")),
    ],
    ids=["plain", "explicit-secret", "cert", "key", "other-vault-pinned", "all-parts", "max-object", "max-vault"],
)
def test_parse_ref_accepts(text: str, default_vault: str | None, expected: ObjectRef) -> None:
    ref, problems = contract.parse_ref(text, default_vault)
    assert problems == []
    assert ref == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("blob:x", "unknown object type 'blob'"),
        ("kv/x@", "version '' must be 1-32 letters or digits"),
        ("kv/x", "vault name 'kv' must be 3-24 characters"),
        ("1kv/x", "vault name '1kv' must be 3-24"),
        ("kv--a/x", "vault name 'kv--a'"),
        ("kva-/x", "vault name 'kva-'"),
        ("a" * 25 + "/x", "must be 3-24"),
        ("kva/" + "x" * 128, "must be 1-127 letters, digits or hyphens"),
        ("kva/under_score", "object name 'under_score'"),
        ("kva/", "object name ''"),
        ("orphan", "no vault for 'orphan'"),
    ],
    ids=[
        "bad-type",
        "empty-version",
        "short-vault",
        "vault-starts-digit",
        "double-hyphen",
        "trailing-hyphen",
        "long-vault",
        "long-object",
        "underscore-object",
        "empty-object",
        "no-vault",
    ],
)
def test_parse_ref_rejects(text: str, fragment: str) -> None:
    ref, problems = contract.parse_ref(text, None)
    assert ref is None
    assert any(fragment in p for p in problems), problems


def test_parse_full_example_from_design() -> None:
    req = contract.parse_annotations(
        {
            K + "vault": "payments-kv",
            K + "secret-db-password": "db-password",
            K + "secret-tls.pem": "cert:api-tls",
            K + "env-DB_PASSWORD": "db-password",
            K + "mode": "csi",
            K + "containers": "app,worker",
            K + "mount-path": "/mnt/secrets/",
            "unrelated.io/annotation": "kept",
        }
    )
    assert req.mode is Mode.CSI
    assert req.mount_path == "/mnt/secrets"
    assert req.containers == ("app", "worker")
    assert set(req.objects) == {
        Mounted("db-password", ObjectRef("payments-kv", "db-password")),
        Mounted("tls.pem", ObjectRef("payments-kv", "api-tls", ObjectType.CERT)),
    }
    assert req.env == (EnvVar("DB_PASSWORD", "db-password"),)


@pytest.mark.parametrize(
    ("annotations", "ns_vault", "check"),
    [
        ({K + "secret-a": "a"}, "ns-kv", lambda r: r.objects[0].ref.vault == "ns-kv"),
        ({K + "secret-a": "a", K + "vault": "pod-kv"}, "ns-kv", lambda r: r.objects[0].ref.vault == "pod-kv"),
        ({K + "secret-a": "a"}, "ns-kv", lambda r: r.mount_path == "/mnt/secrets" and r.mode is Mode.CSI),
        ({K + "secret-a": "a"}, "ns-kv", lambda r: r.containers is None),
        (
            {K + "secret-a": "a", K + "mode": "init", K + "secret-b": "other-kv/b"},
            "ns-kv",
            lambda r: r.vaults == ("ns-kv", "other-kv"),
        ),
        (
            {K + "secret-a": "a", K + "mode": "init", K + "init-first": "false"},
            "ns-kv",
            lambda r: r.init_first is False,
        ),
        (
            {K + "env-TOKEN": "kv-one/api-token"},
            None,
            lambda r: (
                r.objects == (Mounted("TOKEN", ObjectRef("kv-one", "api-token")),)
                and r.env == (EnvVar("TOKEN", "TOKEN"),)
            ),
        ),
        (
            {K + "secret-tok": "kv-one/api-token", K + "env-TOKEN": "kv-one/api-token"},
            None,
            lambda r: len(r.objects) == 1 and r.env == (EnvVar("TOKEN", "tok"),),
        ),
        (
            {K + "provider-class": "hand-written", K + "env-X": "some-alias"},
            None,
            lambda r: r.provider_class == "hand-written" and r.env == (EnvVar("X", "some-alias"),),
        ),
        (
            {K + "secret-a": "a", K + "init-first": "false"},
            "ns-kv",
            lambda r: r.warnings == ("kvinject.io/init-first is ignored in mode csi",),
        ),
        ({K + "secret-a": "a", K + "status": "injected"}, "ns-kv", lambda r: len(r.objects) == 1),
        ({K + "secret-a": "a"}, "ns-kv", lambda r: r.restart_on_change is False),
        ({K + "secret-a": "a", K + "restart-on-change": "true"}, "ns-kv", lambda r: r.restart_on_change is True),
        (
            {K + "provider-class": "spc", K + "restart-on-change": "true"},
            None,
            lambda r: r.restart_on_change is True and r.provider_class == "spc",
        ),
        (
            {K + "secret-a": "a", K + "mode": "init", K + "restart-on-change": "false"},
            "ns-kv",
            lambda r: r.restart_on_change is False and r.mode is Mode.INIT,
        ),
    ],
    ids=[
        "namespace-default-vault",
        "pod-vault-wins",
        "defaults",
        "all-containers-default",
        "init-many-vaults",
        "init-first-false",
        "env-full-ref-mounts-file-named-after-var",
        "env-full-ref-reuses-alias",
        "provider-class-env",
        "init-first-warning-in-csi",
        "own-status-accepted",
        "restart-on-change-default-off",
        "restart-on-change-csi",
        "restart-on-change-provider-class",
        "restart-on-change-false-in-init",
    ],
)
def test_parse_accepts(annotations: dict[str, str], ns_vault: str | None, check: object) -> None:
    req = contract.parse_annotations(annotations, ns_vault)
    assert callable(check) and check(req), req


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({K + "secret-a": "a", K + "mode": "sidecar"}, ["kvinject.io/mode: 'sidecar' must be csi or init"]),
        (
            {K + "secret-a": "kv-one/a", K + "secrets-b": "x"},
            [
                "unknown annotation 'kvinject.io/secrets-b' (known: vault, secret-<alias>, env-<VAR>, mode,"
                " containers, mount-path, provider-class, init-first, store, vault-role, refresh, restart-on-change)"
            ],
        ),
        (
            {K + "secret-.hidden": "kv-one/a"},
            [
                "kvinject.io/secret-.hidden: alias '.hidden' must be a safe file name"
                " (letters, digits, '.', '_', '-'; not starting with '.')"
            ],
        ),
        (
            {K + "secret-a": "a"},
            ["kvinject.io/secret-a: no vault for 'a': write <vault>/a or set the kvinject.io/vault annotation"],
        ),
        (
            {K + "secret-a": "kv-one/a", K + "mount-path": "relative"},
            ["kvinject.io/mount-path: 'relative' must be an absolute path other than / without '..' or ':'"],
        ),
        ({K + "secret-a": "kv-one/a", K + "mount-path": "/"}, ["kvinject.io/mount-path: '/' must be"]),
        ({K + "secret-a": "kv-one/a", K + "mount-path": "/a/../etc"}, ["kvinject.io/mount-path: '/a/../etc'"]),
        (
            {K + "secret-a": "kv-one/a", K + "containers": " , "},
            ["kvinject.io/containers: list at least one container name, or remove the annotation"],
        ),
        (
            {K + "secret-a": "kv-one/a", K + "containers": "App"},
            ["kvinject.io/containers: 'App' is not a valid container name"],
        ),
        (
            {K + "secret-a": "kv-one/a", K + "mode": "init", K + "init-first": "no"},
            ['kvinject.io/init-first: \'no\' must be "true" or "false"'],
        ),
        (
            {K + "secret-a": "kv-one/a", K + "env-1BAD": "a"},
            ["kvinject.io/env-1BAD: '1BAD' is not a valid environment variable name"],
        ),
        (
            {K + "secret-a": "kv-one/a", K + "env-A": "missing"},
            [
                "kvinject.io/env-A: 'missing' is neither an alias defined by a kvinject.io/secret-<alias> annotation"
                " nor a valid reference (no vault for 'missing'"
            ],
        ),
        (
            {K + "secret-a": "kv-one/a", K + "mode": "init", K + "env-A": "a"},
            [
                "kvinject.io/env-A: environment variables need a synced Kubernetes Secret, which only mode csi"
                " creates; read the file instead or use mode csi"
            ],
        ),
        (
            {K + "secret-A": "kv-one/a", K + "env-A": "kv-one/other"},
            ["kvinject.io/env-A: alias 'A' is already used for a different object"],
        ),
        (
            {K + "secret-a": "kv-one/a", K + "secret-b": "kv-two/b"},
            [
                "mode csi mounts one SecretProviderClass, which holds one vault, but this pod names 2"
                " (kv-one, kv-two): set kvinject.io/mode: init to read several vaults"
            ],
        ),
        (
            {K + "provider-class": "spc", K + "secret-a": "kv-one/a"},
            [
                "kvinject.io/provider-class mounts an existing SecretProviderClass: remove the kvinject.io/secret-*"
                " annotations or the kvinject.io/provider-class annotation"
            ],
        ),
        ({K + "provider-class": "Bad_Name"}, ["kvinject.io/provider-class: 'Bad_Name' is not a valid object name"]),
        ({K + "provider-class": "spc", K + "mode": "init"}, ["kvinject.io/provider-class works only in mode csi"]),
        ({K + "vault": "x", K + "secret-a": "a"}, ["kvinject.io/vault: 'x' is not a valid Key Vault name"]),
        (
            {K + "secret-a": "kv-one/a", K + "restart-on-change": "yes"},
            ['kvinject.io/restart-on-change: \'yes\' must be "true" or "false"'],
        ),
        (
            {K + "secret-a": "kv-one/a", K + "mode": "init", K + "restart-on-change": "true"},
            [
                "kvinject.io/restart-on-change works only in mode csi (the Secrets Store CSI driver reports the"
                " versions a pod mounts): remove it, or use mode csi"
            ],
        ),
        (
            {},
            [
                "pod is labelled kvinject.io/inject=true but requests nothing: add kvinject.io/secret-<alias>"
                " annotations or kvinject.io/provider-class"
            ],
        ),
    ],
    ids=[
        "bad-mode",
        "unknown-key-typo",
        "hidden-alias",
        "no-vault",
        "relative-mount",
        "root-mount",
        "dotdot-mount",
        "empty-containers",
        "bad-container-name",
        "bad-bool",
        "bad-env-name",
        "env-unknown-alias",
        "env-in-init-mode",
        "env-alias-taken",
        "two-vaults-csi",
        "provider-class-with-secrets",
        "bad-provider-class",
        "provider-class-init",
        "bad-vault",
        "restart-on-change-not-bool",
        "restart-on-change-init",
        "nothing",
    ],
)
def test_parse_rejects_with_exact_message(annotations: dict[str, str], expected: list[str]) -> None:
    with pytest.raises(ContractError) as err:
        contract.parse_annotations(annotations)
    for fragment in expected:
        assert any(p.startswith(fragment) for p in err.value.problems), err.value.problems


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ContractError) as err:
        contract.parse_annotations(
            {
                K + "mode": "sidecar",
                K + "secret-../x": "kv-one/a",
                K + "secret-b": "blob:kv-one/b",
                K + "env-9": "b",
                K + "mount-path": "relative",
                K + "typo": "1",
                K + "restart-on-change": "True",
            }
        )
    assert len(err.value.problems) == 7, err.value.problems


def test_restart_on_change_in_init_mode_is_one_problem_among_all() -> None:
    with pytest.raises(ContractError) as err:
        contract.parse_annotations(
            {K + "secret-a": "kv-one/a", K + "mode": "init", K + "restart-on-change": "true", K + "env-A": "a"}
        )
    assert [p.split(" ")[0] for p in err.value.problems] == ["kvinject.io/restart-on-change", "kvinject.io/env-A:"]


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (None, False),
        ({}, False),
        ({K + "inject": "false"}, False),
        ({K + "inject": "True"}, False),
        ({K + "inject": "true"}, True),
    ],
    ids=["none", "empty", "false", "wrong-case", "true"],
)
def test_opt_in_label(labels: dict[str, str] | None, expected: bool) -> None:
    assert contract.is_opted_in(labels) is expected


def test_ref_str_round_trips() -> None:
    for text in ["kv-one/a", "cert:kv-one/a", "key:kv-one/a@abc"]:
        ref, _ = contract.parse_ref(text, None)
        assert str(ref) == text
