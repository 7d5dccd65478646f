"""Hand-made inputs at the edges random generation rarely hits: the size limit, headers, nesting depth, the
largest bodies, inputs that cost more than linear time, and memory kept after a request.

`edge_inputs()` go through `Harness.run` like every other input; `check_retention()` is a probe of its own.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterator
from typing import Any

import orjson

from tests.fuzz.harness import ENDPOINTS, Failure, Harness, Input
from tests.fuzz.strategies import Case, Deep, bulk_annotations, bulk_containers, encode
from tests.harness import admission_review, controller_pod
from webhook import names as kvnames
from webhook.app import MAX_BODY
from webhook.review import MAX_CONTAINERS, MAX_SEPARATORS, work

KIND = "edge"
CONTENT_TYPES: tuple[bytes | None, ...] = (
    b"application/json; charset=utf-8",
    b"APPLICATION/JSON",
    b" application/json ",
    b"application/json;;",
    b"application/json-patch+json",
    b";application/json",
    b"application/json\x00",
    b"text/plain",
    b"\xff",
    b"",
    None,
)
CONTENT_LENGTHS = (
    b"\xb2",
    b"abc",
    b"-1",
    b" 12",
    b"0",
    b"1e3",
    b"1" * 30,
    b"0" * 40 + b"12",
    str(MAX_BODY + 1).encode(),
)
UIDS: tuple[Any, ...] = ("", " ", "\u202e", "\u200b", "a" * 100_000, "../x", 1, 0, None, True, [], {}, ["u"], {"u": 1})
# orjson reads nesting up to 1024 levels; `object.spec.x` sits at level 4.
DEPTHS = (250, 1000, 1019, 1020, 1021, 1024, 1025, 10_000, 1_000_000)


def review(pod: Any, uid: str = "edge", **kwargs: Any) -> dict[str, Any]:
    return admission_review(pod, uid=uid, **kwargs)


def body(doc: Any) -> bytes:
    return orjson.dumps(doc)


def padded_to(doc: Any, size: int, unit: bytes = b" ") -> bytes:
    """`doc` as JSON followed by whitespace up to `size` bytes."""
    raw = body(doc)
    return raw + unit * (size - len(raw))


def filled_to(size: int, unit: bytes) -> bytes:
    """An AdmissionReview for a plain pod whose request carries an array of `unit` up to `size` bytes."""
    head = body(review(controller_pod()))[:-2] + b',"filler":['
    count = (size - len(head) - len(b"0]}}")) // len(unit)
    return head + unit * count + b"0]}}"


BUDGET_UNITS = (b"{},", b"[],", b'{"a":[]},', b'"",', b'"a",', b"1.5,", b"null,")


def at_budget(unit: bytes, extra: int = 0) -> bytes:
    """A plain pod's review filled with `unit` up to the parse budget exactly (plus `extra` units)."""
    base = filled_to(0, unit)
    containers, separators = work(base)
    unit_containers, unit_separators = work(unit)
    room = [MAX_SEPARATORS - separators]
    if unit_containers:
        room.append((MAX_CONTAINERS - containers) // unit_containers)
    count = min(room) // max(unit_separators, 1) + extra
    return filled_to(len(base) + count * len(unit), unit)


def _edge(endpoint: str, label: str, raw: bytes, **kwargs: Any) -> Input:
    return Input(KIND, endpoint, raw, label=label, **kwargs)


def _protocol(endpoint: str) -> Iterator[Input]:
    plain = body(review(controller_pod()))
    for raw in (b"", b"{", b"null", b"[]", b'"x"', b"1", b"{}", b"\xef\xbb\xbf" + plain, plain + b"x", plain + plain):
        yield _edge(endpoint, f"body {raw[:12]!r}", raw)
    for content_type in CONTENT_TYPES:
        yield _edge(endpoint, f"content-type {content_type!r}", plain, content_type=content_type)
    for length in CONTENT_LENGTHS:
        yield _edge(endpoint, f"content-length {length[:12]!r}", plain, content_length=length)
    yield _edge(endpoint, "no content-length", plain, content_length=b"")
    yield _edge(endpoint, "one byte per receive", plain, chunk=1)
    for uid in UIDS:
        doc = review(controller_pod())
        doc["request"]["uid"] = uid
        yield _edge(endpoint, f"uid {str(uid)[:12]!r}", body(doc))


def _limits(endpoint: str) -> Iterator[Input]:
    at_limit = padded_to(review(controller_pod()), MAX_BODY)
    yield _edge(endpoint, "body at the limit", at_limit)
    yield _edge(endpoint, "one byte over, declared", at_limit + b" ")
    yield _edge(endpoint, "one byte over, streamed", at_limit + b" ", content_length=b"")
    yield _edge(endpoint, "one byte over, declared small", at_limit + b" ", content_length=b"10")
    yield _edge(endpoint, "declares 8 GiB", b"{}", content_length=str(MAX_BODY * 1000).encode())
    yield _edge(endpoint, "32 MiB streamed", b" " * (4 * MAX_BODY), content_length=b"", chunk=MAX_BODY)
    for unit in BUDGET_UNITS:  # the most objects per byte: refused by the parse budget before parsing
        yield _edge(endpoint, f"4 MiB of {unit!r}", filled_to(MAX_BODY, unit))
    for unit in BUDGET_UNITS:  # the costliest bodies that are still parsed, and one unit more
        yield _edge(endpoint, f"budget of {unit!r}", at_budget(unit))
        yield _edge(endpoint, f"budget of {unit!r} + 1", at_budget(unit, 1))


def _depth(endpoint: str) -> Iterator[Input]:
    for depth in DEPTHS:
        for shape in ("list", "object"):
            pod = controller_pod()
            pod["spec"]["x"] = Deep(depth, shape)
            yield _edge(endpoint, f"depth {depth} {shape}", encode(Case(review(pod), well_typed=False)))


def _complexity(endpoint: str) -> Iterator[Input]:
    """Bodies well under the limit whose cost grows faster than their size if an algorithm is quadratic."""
    for shape, count in (("env", 7000), ("secret", 20_000), ("same-env", 12_000)):
        pod = controller_pod(annotations=bulk_annotations(shape, count))
        yield _edge(endpoint, f"{count} {shape} annotations", body(review(pod)))
    # containers x env annotations x env entries already in each container
    env = {kvnames.SECRET_PREFIX + "db": "db-password"} | {f"{kvnames.ENV_PREFIX}V{i}": "db" for i in range(1500)}
    many = bulk_containers({"name": "x", "image": "registry.example.com/app:1.0"}, 20, 1500)
    pod = controller_pod(annotations=env, containers=many)
    yield _edge(endpoint, "20 containers x 1500 env x 1500 env annotations", body(review(pod)))
    # thousands of containers, all named in kvinject.io/containers, each with volume mounts
    mounts = [{"name": f"v{i}", "mountPath": f"/m{i}"} for i in range(20)]
    many = bulk_containers({"name": "x", "image": "i", "volumeMounts": mounts}, 4000, 0)  # within the parse budget
    names = {kvnames.CONTAINERS: ",".join(c["name"] for c in many), kvnames.SECRET_PREFIX + "db": "db-password"}
    yield _edge(
        endpoint, "4000 named containers x 20 mounts", body(review(controller_pod(annotations=names, containers=many)))
    )
    pod = controller_pod(
        initContainers=bulk_containers({"name": "x", "image": "i"}, 3000, 0),
        volumes=[{"name": f"v{i}", "emptyDir": {}} for i in range(10_000)],
    )
    yield _edge(endpoint, "3000 init containers, 10000 volumes", body(review(pod)))
    huge = {kvnames.SECRET_PREFIX + "db": "db-password", kvnames.MOUNT_PATH: "/" + "a/" * 2**19}
    yield _edge(endpoint, "1 MiB mount path", body(review(controller_pod(annotations=huge))))
    key = {kvnames.SECRET_PREFIX + "a" * 2**20: "x"}
    yield _edge(endpoint, "1 MiB annotation key", body(review(controller_pod(annotations=key))))


def edge_inputs() -> Iterator[Input]:
    for endpoint in ENDPOINTS:
        yield from _protocol(endpoint)
        yield from _limits(endpoint)
        yield from _depth(endpoint)
        yield from _complexity(endpoint)


RETENTION_BOUND = 16 * 1024 * 1024


def check_retention(harness: Harness, requests: int = 20, secrets: int = 2000) -> list[str]:
    """Memory still held after `requests` distinct, large, valid requests (each answered and then dropped).

    Caches may keep a little per request, but what they keep must not grow with the size of the requests.
    """
    gc.collect()
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        sent = 0
        last: Input | None = None
        for index in range(requests):
            pod = controller_pod(
                annotations={
                    f"{kvnames.SECRET_PREFIX}s{i}": f"payments-kv/o{index}-{i}-{'x' * 60}" for i in range(secrets)
                }
            )
            last = Input(KIND + "-retention", "/mutate", body(review(pod)), label=f"retention {index}")
            sent += len(last.body)
            harness.run(last)
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        if not tracing:
            tracemalloc.stop()
    if retained <= RETENTION_BOUND or last is None:
        return []
    problems = [
        f"{retained} bytes still held after {requests} distinct valid requests of {sent} bytes in all"
        f" (bound {RETENTION_BOUND}): memory grows with the requests answered"
    ]
    harness.record(Failure(last, problems, "retention: memory held after requests grows with their size"))
    return problems
