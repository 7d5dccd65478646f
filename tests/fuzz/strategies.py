"""Hypothesis strategies for AdmissionReviews, pods, kvinject annotations and hostile values.

A `Case` is a JSON document (plus how to encode it) that `encode()` turns into request bytes. Documents are
built in layers, each drawn with explicit odds so that most requests get past the parser and the opt-in
label and reach the annotation contract, the cluster lookups, the planner and the policy:

- shape: an AdmissionReview v1 around a pod as a controller sends it (`tests.helpers.controller_pod`), with
  random containers, init and ephemeral containers, volumes (csi volumes now and then with volumeAttributes that
  override Azure provider parameters: `tests.differential.params`), env, envFrom and securityContext; now and then
  another operation, kind, sub-resource, namespace, a hostile uid, a dry run, a null object;
- values: a pod is either *valid* (every string from the annotation grammar or from names the golden cluster
  knows) or *hostile* (about a third of its strings are hostile text: RTL and zero-width characters, lone
  surrogates, `../`, JSON-looking strings, strings up to 100 KiB);
- bulk: thousands of containers, env entries or annotations, built by repetition so that generation stays fast;
- corruption (`Case.well_typed` False): one to three nodes anywhere replaced by a wrong-typed value or null,
  deleted, given an extra member, or replaced by a `Deep` placeholder written as up to 100,000 levels of nesting.
"""

from __future__ import annotations

import copy
import json
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from hypothesis import strategies as st

from tests.differential.params import attribute_overrides
from tests.harness import admission_review, controller_pod
from webhook import names as kvnames
from webhook.names import CSI_DRIVER as DRIVER
from webhook.providers.azure import names as azure_names

Draw = Callable[[st.SearchStrategy[Any]], Any]


def chance(draw: Draw, percent: int) -> bool:
    """True with about `percent` % probability (hypothesis' booleans and one_of take no odds).

    False is the simpler choice, so hypothesis shrinks towards the plain case and its first examples stay plain.
    """
    return bool(draw(st.integers(0, 99)) >= 100 - percent)


# -- text ---------------------------------------------------------------------------------------------------------

SPECIAL_TEXT: tuple[str, ...] = (
    "",
    " ",
    "\t",
    "\n",
    "\x00",
    "\x7f",
    "\u202e",  # right-to-left override
    "\u200b",  # zero-width space
    "\u200d",
    "\ufeff",
    "\u2028",
    "\u0301",
    "\u202egnp.exe",
    "a\u200bb",
    "\u0130",  # İ: lower() changes the length
    "\u00df",
    "\ufb03",
    "\U0001f600",
    "\U0010ffff",
    "\ud800",  # lone surrogates: \\ud800 in ASCII JSON, invalid UTF-8 otherwise; orjson refuses both
    "\udfff",
    "\ud83d",
    "..",
    "../",
    "../../etc/passwd",
    "/..",
    "/mnt/../",
    "./",
    "~",
    "%2e%2e%2f",
    "\\",
    "\\..\\",
    "null",
    "true",
    "[]",
    "{}",
    '{"kvinject.io/vault":"payments-kv"}',
    '["a",{"b":null}]',
    "1e999",
    "-0",
    "NaN",
    "kvinject.io/",
    "kvinject.io/secret-",
    "secret:",
    "key:a/b@",
    "cert:payments-kv/api-tls@",
    "@",
    "/",
    ":",
    ",",
    ",,",
    "app,app",
    " , ",
    "${HOME}",
    "$(id)",
    "%s%n",
    "{0}",
    "\x1b[31m",
)
HUGE_UNITS = ("a", "\u200b", "../", "\u202e", "\u00e9", "\U0001f600", "a-", "x/", "app,", "0")
HUGE_SIZES = (63, 64, 127, 128, 253, 254, 1024, 4096, 65536, 100 * 1024)


def _repeat(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


def huge_text() -> st.SearchStrategy[str]:
    """Strings of 63 characters to 100 KiB, made by repetition (drawing them character by character is slow)."""
    return st.builds(_repeat, st.sampled_from(HUGE_UNITS), st.sampled_from(HUGE_SIZES))


@st.composite
def hostile_text(draw: Draw) -> str:
    roll = draw(st.integers(0, 99))
    if roll < 45:
        return str(draw(st.sampled_from(SPECIAL_TEXT)))
    if roll < 70:
        return str(draw(st.text(max_size=12)))
    if roll < 90:
        pieces = st.one_of(st.sampled_from(SPECIAL_TEXT), st.text(max_size=4))
        return "".join(draw(st.lists(pieces, min_size=2, max_size=4)))
    return str(draw(huge_text()))


def pick(draw: Draw, valid: st.SearchStrategy[str], hostile: bool, percent: int = 30, near: Sequence[str] = ()) -> str:
    """A valid value, or for a hostile pod `percent` % of the time a near miss or hostile text."""
    if hostile and chance(draw, percent):
        if near and chance(draw, 50):
            return str(draw(st.sampled_from(near)))
        return str(draw(hostile_text()))
    return str(draw(valid))


def wrong_typed() -> st.SearchStrategy[Any]:
    """A value of any JSON type, often not the one expected."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from(("", "true", "null", "{}")),
        hostile_text(),
    )
    return st.one_of(
        scalars,
        st.just([]),
        st.just({}),
        st.lists(scalars, max_size=3),
        st.dictionaries(st.text(max_size=5), scalars, max_size=3),
    )


# -- the annotation grammar ---------------------------------------------------------------------------------------

ALNUM = string.ascii_letters + string.digits
VAULTS = ("payments-kv", "payments-kv", "payments-kv", "shared-kv", "kv-one", "other-kv")
OBJECTS = ("db-password", "api-tls", "shared-config", "legacy-report", "queue-in", "missing", "a")
CONTAINER_NAMES = ("app", "app", "sidecar", "init", "worker", kvnames.INIT_CONTAINER)
ACCOUNTS = ("api", "api", "api", "worker", "default", "batch", "orphan", "foreign", "ghost")
NAMESPACES = ("payments", "payments", "payments", "payments", "sandbox", "observed", "nowhere")
PROVIDER_CLASSES = ("payments-shared", "payments-shared", "node-identity", "kvinject-0123456789abcdef")
SECRET_NAMES = ("payments-shared", "kvinject-0123456789abcdef", "other", "db")
MOUNT_PATHS = (
    kvnames.DEFAULT_MOUNT_PATH,
    "/data",
    "/etc/app/secrets",
    "/a/./b/",
    "/mnt/secrets/",
    kvnames.OUTPUT_DIR,
    kvnames.TOKEN_DIR,
)
VOLUME_NAMES = (kvnames.VOLUME_NAME, kvnames.TOKEN_VOLUME, "data", "config", "tls")


def _word(first: str, rest: str, max_size: int) -> st.SearchStrategy[str]:
    return st.builds(lambda a, b: a + b, st.sampled_from(first), st.text(rest, max_size=max_size))


vault_names = st.one_of(st.sampled_from(VAULTS), _word(string.ascii_letters, ALNUM + "-", 23))
object_names = st.one_of(st.sampled_from(OBJECTS), _word(ALNUM, ALNUM + "-", 130))
versions = st.text(ALNUM, min_size=1, max_size=33)
aliases = st.one_of(st.sampled_from(("db-password", "tls.pem", "DB_PASSWORD", "a")), _word(ALNUM, ALNUM + "._-", 56))
env_names = st.one_of(st.sampled_from(("DB_PASSWORD", "PATH", "_", "db-password")), _word(ALNUM + "_", ALNUM + "_", 20))
container_names = st.one_of(st.sampled_from(CONTAINER_NAMES), _word(string.ascii_lowercase, string.ascii_lowercase, 8))


GRANTED_REFS = ("db-password", "cert:api-tls", "shared-config", "payments-kv/db-password", "secret:db-password")


@st.composite
def refs(draw: Draw) -> str:
    """`[<type>:][<vault>/]<object>[@<version>]`: objects the golden policies grant, or anything in the grammar."""
    if chance(draw, 40):
        return str(draw(st.sampled_from(GRANTED_REFS)))
    kind = draw(st.sampled_from(("", "", "", "", "secret:", "key:", "cert:", "blob:")))
    vault = draw(vault_names) + "/" if chance(draw, 40) else ""
    version = "@" + draw(versions) if chance(draw, 15) else ""
    return f"{kind}{vault}{draw(object_names)}{version}"


@st.composite
def kvinject_annotations(draw: Draw, containers: Sequence[str] = ("app",), hostile: bool = False) -> dict[str, Any]:
    """kvinject.io/* annotations (plus a foreign one), from the grammar or, for a hostile pod, partly hostile."""
    result: dict[str, Any] = {}
    defined: list[str] = []
    for _ in range(0 if chance(draw, 15) else draw(st.integers(1, 3))):
        alias = pick(draw, aliases, hostile)
        defined.append(alias)
        result[kvnames.SECRET_PREFIX + alias] = pick(draw, refs(), hostile)
    for _ in range(draw(st.integers(1, 3)) if chance(draw, 35) else 0):
        value = st.sampled_from(defined) if defined and chance(draw, 60) else refs()
        result[kvnames.ENV_PREFIX + pick(draw, env_names, hostile)] = pick(draw, value, hostile)
    names = st.lists(st.sampled_from(containers), min_size=1, max_size=3).map(",".join)
    # (key, valid values, near misses for hostile pods, percent of pods that set it)
    singles: tuple[tuple[str, st.SearchStrategy[str], tuple[str, ...], int], ...] = (
        (kvnames.VAULT, vault_names, ("kv", "a--b", "payments-kv-"), 20),
        (kvnames.MODE, st.sampled_from(("csi", "init")), ("CSI", "", "init "), 25),
        (kvnames.CONTAINERS, names, ("ghost", "app,", ",", "App"), 20),
        (kvnames.MOUNT_PATH, st.sampled_from(MOUNT_PATHS), ("/", "//", "/a/../b", "relative", "/a:b", ""), 20),
        (kvnames.PROVIDER_CLASS, st.sampled_from(PROVIDER_CLASSES), ("missing-class", "Payments-Shared"), 12),
        (kvnames.INIT_FIRST, st.sampled_from(("true", "false")), ("yes", "True", "0"), 15),
        (kvnames.RESTART_ON_CHANGE, st.sampled_from(("true", "false")), ("yes", "True", ""), 10),
        (kvnames.STATUS, st.just(kvnames.STATUS_INJECTED), ("pending",), 8),
        (kvnames.INJECTED_CONTAINERS, names, ("", ",", "App", "app,app"), 6),
        (kvnames.PREFIX + "unknown", st.just("x"), (), 2),
    )
    for key, valid, near, percent in singles:
        if chance(draw, percent):
            result[key] = pick(draw, valid, hostile, near=near)
    if hostile and chance(draw, 20):
        key = draw(st.one_of(st.sampled_from(("KVINJECT.IO/vault", "kvinject.io/", "secret-", "env-")), hostile_text()))
        result[kvnames.PREFIX + key if chance(draw, 50) else key] = draw(hostile_text())
    if chance(draw, 4):
        shape = draw(st.sampled_from(("secret", "env", "same-env")))
        result.update(bulk_annotations(shape, draw(st.sampled_from((100, 1000, 5000)))))
    if chance(draw, 30):
        result["deployment.kubernetes.io/revision"] = "3"
    return result


def bulk_annotations(shape: str, count: int) -> dict[str, str]:
    """`count` annotations of one shape: distinct secrets, env vars with their own references, or shared ones."""
    if shape == "secret":
        return {f"{kvnames.SECRET_PREFIX}s{i}": f"payments-kv/obj-{i}" for i in range(count)}
    if shape == "env":
        return {f"{kvnames.ENV_PREFIX}V{i}": f"payments-kv/obj-{i}" for i in range(count)}
    return {f"{kvnames.ENV_PREFIX}V{i}": "payments-kv/db-password" for i in range(count)}


# -- pods ---------------------------------------------------------------------------------------------------------


@st.composite
def env_entries(draw: Draw, hostile: bool = False) -> dict[str, Any]:
    name = pick(draw, env_names, hostile)
    choice = draw(st.integers(0, 3))
    if choice == 0:
        return {"name": name, "value": pick(draw, st.just("v"), hostile)}
    if choice == 1:
        return {"name": name, "valueFrom": {"secretKeyRef": {"name": draw(st.sampled_from(SECRET_NAMES)), "key": "k"}}}
    if choice == 2:
        return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    return {"name": name}


@st.composite
def containers(draw: Draw, name: str, hostile: bool = False) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": "registry.example.com/app:1.0",
        "resources": {},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
        "imagePullPolicy": "IfNotPresent",
    }
    if chance(draw, 30):
        container["env"] = draw(st.lists(env_entries(hostile), max_size=4))
    if chance(draw, 15):
        ref = "secretRef" if chance(draw, 70) else "configMapRef"
        container["envFrom"] = [{ref: {"name": draw(st.sampled_from(SECRET_NAMES))}}]
    if chance(draw, 25):
        container["volumeMounts"] = [
            {
                "name": draw(st.sampled_from(VOLUME_NAMES)),
                "mountPath": pick(draw, st.sampled_from(MOUNT_PATHS), hostile),
                "readOnly": draw(st.booleans()),
            }
            for _ in range(draw(st.integers(1, 3)))
        ]
    if chance(draw, 8):
        container["command"] = list(kvnames.INIT_COMMAND)
    if chance(draw, 15):
        container["securityContext"] = {"runAsNonRoot": True, "runAsUser": draw(st.integers(-1, 2**31))}
    return container


@st.composite
def volumes(draw: Draw, hostile: bool = False) -> dict[str, Any]:
    name = draw(st.sampled_from(VOLUME_NAMES))
    shape = draw(st.integers(0, 4))
    if shape == 0:
        attributes = {"secretProviderClass": pick(draw, st.sampled_from(PROVIDER_CLASSES), hostile)}
        if chance(draw, 20):  # parameters of the class overridden by the volume (the Azure provider reads both)
            attributes.update(draw(attribute_overrides()))
        csi = {"driver": DRIVER if chance(draw, 80) else "other.csi.k8s.io", "volumeAttributes": attributes}
        return {"name": name, "csi": {**csi, "readOnly": draw(st.booleans())}}
    if shape == 1:
        return {"name": name, "secret": {"secretName": draw(st.sampled_from(SECRET_NAMES))}}
    if shape == 2:
        token = {"serviceAccountToken": {"audience": azure_names.TOKEN_AUDIENCE, "path": kvnames.TOKEN_FILE}}
        secret = {"secret": {"name": draw(st.sampled_from(SECRET_NAMES))}}
        return {"name": name, "projected": {"sources": [token, secret]}}
    if shape == 3:
        return {"name": name, "emptyDir": {"medium": "Memory"} if chance(draw, 60) else {}}
    return {"name": name, "configMap": {"name": "settings"}}


BULK_CONTAINERS = ((1000, 0), (3000, 0), (200, 50), (10, 2000))


def bulk_containers(template: dict[str, Any], count: int, env: int) -> list[dict[str, Any]]:
    """`count` copies of a container with distinct names, each with `env` env entries.

    The copies share nothing, so that corrupting one node changes one place in the body.
    """
    entries = [{"name": f"E{i}", "value": "v"} for i in range(env)]
    return [copy.deepcopy({**template, "name": f"c{i}", "env": entries}) for i in range(count)]


@st.composite
def pods(draw: Draw, hostile: bool | None = None) -> dict[str, Any]:
    """A pod as a controller sends it; `hostile` (drawn when None) makes about a third of its strings hostile."""
    if hostile is None:
        hostile = chance(draw, 50)
    count = 0 if chance(draw, 5) else draw(st.integers(1, 3))
    names = [pick(draw, container_names, hostile, 10) for _ in range(count)]
    app_containers = [draw(containers(n, hostile)) for n in names]
    spec: dict[str, Any] = {}
    if chance(draw, 25):
        inits = [pick(draw, container_names, hostile, 10) for _ in range(draw(st.integers(1, 2)))]
        spec["initContainers"] = [draw(containers(n, hostile)) for n in inits]
    if chance(draw, 30):
        spec["volumes"] = draw(st.lists(volumes(hostile), min_size=1, max_size=3))
    if chance(draw, 5):
        spec["ephemeralContainers"] = [draw(containers("debug", hostile))]
    if chance(draw, 4):
        count, env = draw(st.sampled_from(BULK_CONTAINERS))
        app_containers = bulk_containers(app_containers[0] if app_containers else {"name": "x"}, count, env)
    known = [str(c.get("name")) for c in [*app_containers[:5], *spec.get("initContainers", [])]]
    annotations = draw(kvinject_annotations(known or ["app"], hostile))
    labels: dict[str, Any] = {"app": "api", "pod-template-hash": "7d9f8c6b5"}
    if not chance(draw, 10):
        labels[kvnames.INJECT_LABEL] = pick(draw, st.just("false"), hostile, 50) if chance(draw, 10) else "true"
    account = None if chance(draw, 5) else pick(draw, st.sampled_from(ACCOUNTS), hostile, 20)
    pod = controller_pod(
        annotations=annotations,
        containers=app_containers,
        service_account=account or None,
        labels=labels,
        **spec,
    )
    if chance(draw, 15):
        pod["spec"]["securityContext"] = {"fsGroup": draw(st.one_of(st.integers(), st.sampled_from(("1000", None))))}
    if chance(draw, 10):
        pod["metadata"]["name"] = pick(draw, st.just("api-0"), hostile)
    if chance(draw, 10):
        pod["metadata"]["ownerReferences"] = []
    return pod


# -- AdmissionReviews ---------------------------------------------------------------------------------------------

OTHER_KINDS = (("apps", "Deployment"), ("", "Service"), ("core", "Pod"), ("", "pod"))
OTHER_OPERATIONS = ("UPDATE", "DELETE", "CONNECT", "create", "")


@dataclass(frozen=True, slots=True)
class Deep:
    """A placeholder `encode()` writes as `depth` levels of nesting (orjson reads at most 1024)."""

    depth: int
    shape: str  # list | object | mixed

    def text(self) -> str:
        if self.shape == "list":
            return "[" * self.depth + "]" * self.depth
        if self.shape == "object":
            return '{"a":' * self.depth + "null" + "}" * self.depth
        half = self.depth // 2
        return '[{"a":' * half + "1" + "}]" * half


_PLACEHOLDER = re.compile(r'"\\u0000deep(\d+)\\u0000"')
DEPTHS = (10, 253, 254, 255, 256, 1000, 1015, 1016, 1020, 1023, 1024, 1025, 1100, 5000, 100_000)


@dataclass(frozen=True)
class Case:
    doc: Any
    well_typed: bool
    ascii: bool = False  # \\uXXXX escapes (lone surrogates survive as escapes) or raw UTF-8 (surrogatepass)
    pretty: bool = False

    @property
    def kind(self) -> str:
        return "structured" if self.well_typed else "structured-corrupt"


def _nodes(value: Any, path: tuple[Any, ...] = (), out: list[tuple[Any, ...]] | None = None) -> list[tuple[Any, ...]]:
    """Paths of the nodes of a document (the first 20 items of long lists and maps)."""
    out = [] if out is None else out
    out.append(path)
    if isinstance(value, dict):
        for key in list(value)[:20]:
            _nodes(value[key], (*path, key), out)
    elif isinstance(value, list):
        for index, item in enumerate(value[:20]):
            _nodes(item, (*path, index), out)
    return out


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path[:-1]:
        doc = doc[step]
    return doc


@st.composite
def corrupt(draw: Draw, doc: Any) -> Any:
    """Replace, delete or extend one to three nodes anywhere in `doc` (which is modified)."""
    for _ in range(draw(st.integers(1, 3))):
        paths = _nodes(doc)
        path = paths[draw(st.integers(0, len(paths) - 1))]
        action = draw(st.sampled_from(("replace", "replace", "replace", "delete", "extra", "deep")))
        if not path:
            if action in ("replace", "deep"):
                doc = draw(wrong_typed())
            continue
        parent, last = _parent(doc, path), path[-1]
        if action == "replace":
            parent[last] = draw(wrong_typed())
        elif action == "deep":
            parent[last] = Deep(draw(st.sampled_from(DEPTHS)), draw(st.sampled_from(("list", "object", "mixed"))))
        elif action == "delete":
            del parent[last]
        elif isinstance(parent[last], dict):
            parent[last][draw(st.text(max_size=8))] = draw(wrong_typed())
        elif isinstance(parent[last], list):
            parent[last].append(draw(wrong_typed()))
    return doc


@st.composite
def admission_reviews(draw: Draw, corruption: int = 30) -> Case:
    """An AdmissionReview v1 around a random pod; `corruption` % of them are broken somewhere."""
    group, kind = draw(st.sampled_from(OTHER_KINDS)) if chance(draw, 10) else ("", "Pod")
    uid = draw(hostile_text()) if chance(draw, 10) else str(draw(st.uuids()))
    namespace = draw(hostile_text()) if chance(draw, 5) else draw(st.sampled_from(NAMESPACES))
    doc = admission_review(
        draw(pods()),
        namespace=namespace,
        operation=draw(st.sampled_from(OTHER_OPERATIONS)) if chance(draw, 10) else "CREATE",
        kind=kind,
        dry_run=chance(draw, 20),
        uid=uid or "",
    )
    request = doc["request"]
    request["kind"]["group"] = request["requestKind"]["group"] = group
    if chance(draw, 5):
        request["subResource"] = draw(st.sampled_from(("status", "ephemeralcontainers", "")))
    if chance(draw, 10):
        del request["dryRun"]
    if chance(draw, 5):
        request["oldObject"] = draw(pods())
    if chance(draw, 3):
        request["object"] = None
    well_typed = True
    if chance(draw, corruption):
        doc = draw(corrupt(doc))
        well_typed = False
    return Case(doc, well_typed, ascii=chance(draw, 30), pretty=chance(draw, 5))


def encode(case: Case) -> bytes:
    """The request body: JSON text with every `Deep` written out."""
    deep: list[Deep] = []

    def placeholder(value: Any) -> str:
        if isinstance(value, Deep):
            deep.append(value)
            return f"\x00deep{len(deep) - 1}\x00"
        raise TypeError(type(value).__name__)

    if case.ascii:
        text = json.dumps(case.doc, ensure_ascii=True, allow_nan=False, separators=(",", ":"), default=placeholder)
    else:
        option = orjson.OPT_PASSTHROUGH_DATACLASS | (orjson.OPT_INDENT_2 if case.pretty else 0)
        try:
            text = orjson.dumps(case.doc, default=placeholder, option=option).decode()
        except orjson.JSONEncodeError:  # lone surrogates (orjson refuses them) or integers beyond 64 bits
            deep.clear()
            text = json.dumps(case.doc, ensure_ascii=False, allow_nan=False, default=placeholder)
    if deep:
        text = _PLACEHOLDER.sub(lambda found: deep[int(found.group(1))].text(), text)
    return text.encode("utf-8", "surrogatepass")
