"""Byte-level mutation of the real golden request fixtures, deterministic for a seed.

Operators: bit flips, byte set/insert/delete/duplicate, truncation, splice of two fixtures, JSON-token insertion,
and replacement of a number or string literal (found by a lexical scan of the bytes) with an extreme one.
`havoc` stacks a few of them. The literal replacements keep most bodies parseable, so they reach the code
behind the parser; the rest test the parser's own error path.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

CASES = Path(__file__).resolve().parent.parent / "golden" / "cases"

_NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_SCALAR = re.compile(rb"\b(?:true|false|null)\b")

EXTREME_NUMBERS: tuple[bytes, ...] = (
    b"0",
    b"-0",
    b"-1",
    b"1e308",
    b"1e309",
    b"-1e309",
    b"1e-400",
    b"2147483648",
    b"-2147483649",
    b"9223372036854775807",
    b"9223372036854775808",
    b"18446744073709551616",
    b"1" * 400,
    b"0.1e1",
    b"1.5",
    b"NaN",
    b"Infinity",
    b"01",
    b"1.",
    b".5",
    b"+1",
    b"0x10",
)
EXTREME_STRINGS: tuple[bytes, ...] = (
    b'""',
    b'" "',
    b'"\\u0000"',
    b'"\\ud800"',
    b'"\\udc00\\ud800"',
    b'"\\ud83d\\ude00"',
    b'"\xe2\x80\xae\xe2\x80\x8b"',  # RTL override, zero-width space
    b'"\xef\xbb\xbf"',  # BOM
    b'"\xff\xfe"',  # not UTF-8
    b'"\xed\xa0\x80"',  # a surrogate encoded in UTF-8
    b'"../../../etc/passwd"',
    b'"/"',
    b'"kvinject.io/secret-x"',
    b'"true"',
    b'"injected"',
    b'"CREATE"',
    b'"Pod"',
    b'"payments"',
    b'"{\\"a\\":[1,2,{}]}"',
    b'"\\"\\\\\\/\\b\\f\\n\\r\\t"',
    b'"\\x41"',
    b'"\\u12"',
    b'"unterminated',
    b"null",
    b"0",
    b"true",
    b"[]",
    b"{}",
    b'["a"]',
    b'{"":""}',
)
TOKENS: tuple[bytes, ...] = (
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b'"',
    b"\\",
    b"null",
    b"true",
    b"{}",
    b"[]",
    b'"x":1,',
    b'"uid":"dup",',
    b'"object":null,',
    b"\x00",
    b"\xff",
    b"\xc0\x80",
    b"\xef\xbb\xbf",
    b" " * 64,
    b"\t\r\n",
    b"/*c*/",
    b"//",
)
INTERESTING_BYTES = b'\x00\x01\x7f\x80\xbf\xc0\xff"\\{}[],:0-+eE.ntf /'


def fixtures(directory: Path = CASES) -> list[bytes]:
    """Every golden request, pretty-printed as stored and compact."""
    pretty = [p.read_bytes() for p in sorted(directory.glob("*.request.json"))]
    return pretty + [orjson.dumps(orjson.loads(b)) for b in pretty]


def _pick_span(rng: random.Random, data: bytes | bytearray) -> tuple[int, int]:
    start = rng.randrange(len(data) + 1)
    length = min(rng.choice((1, 1, 2, 4, 8, 16, 64, 256, 4096)), len(data) - start)
    return start, start + length


def bit_flip(rng: random.Random, data: bytearray, _: Sequence[bytes]) -> None:
    for _i in range(rng.choice((1, 1, 2, 4, 8))):
        if data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)


def byte_set(rng: random.Random, data: bytearray, _: Sequence[bytes]) -> None:
    if data:
        data[rng.randrange(len(data))] = rng.choice(INTERESTING_BYTES) if rng.random() < 0.7 else rng.randrange(256)


def byte_insert(rng: random.Random, data: bytearray, _: Sequence[bytes]) -> None:
    at = rng.randrange(len(data) + 1)
    if rng.random() < 0.5:
        data[at:at] = rng.choice(TOKENS)
    else:
        data[at:at] = bytes(rng.randrange(256) for _i in range(rng.choice((1, 2, 4, 16))))


def byte_delete(rng: random.Random, data: bytearray, _: Sequence[bytes]) -> None:
    start, end = _pick_span(rng, data)
    del data[start:end]


def byte_duplicate(rng: random.Random, data: bytearray, _: Sequence[bytes]) -> None:
    start, end = _pick_span(rng, data)
    chunk = bytes(data[start:end]) * rng.choice((1, 2, 16, 1000))
    at = rng.randrange(len(data) + 1)
    data[at:at] = chunk


def truncate(rng: random.Random, data: bytearray, _: Sequence[bytes]) -> None:
    del data[rng.randrange(len(data) + 1) :]


def splice(rng: random.Random, data: bytearray, seeds: Sequence[bytes]) -> None:
    other = rng.choice(seeds)
    cut, at = rng.randrange(len(data) + 1), rng.randrange(len(other) + 1)
    data[cut:] = other[at:]


def _replace_match(rng: random.Random, data: bytearray, pattern: re.Pattern[bytes], choices: Sequence[bytes]) -> None:
    matches = list(pattern.finditer(data))
    if not matches:
        return
    found = rng.choice(matches)
    if rng.random() < 0.15:  # a very long literal instead
        value = b'"' + rng.choice((b"a", b"\xe2\x80\x8b", b"../", b"\\u0041")) * rng.choice((4096, 40000)) + b'"'
    else:
        value = rng.choice(choices)
    data[found.start() : found.end()] = value


def replace_number(rng: random.Random, data: bytearray, _: Sequence[bytes]) -> None:
    _replace_match(rng, data, _NUMBER, EXTREME_NUMBERS)


def replace_string(rng: random.Random, data: bytearray, _: Sequence[bytes]) -> None:
    _replace_match(rng, data, _STRING, EXTREME_STRINGS)


def replace_scalar(rng: random.Random, data: bytearray, _: Sequence[bytes]) -> None:
    _replace_match(rng, data, _SCALAR, (b"true", b"false", b"null", b"0", b'""', b"{}", b"[]", b'"true"'))


def swap_brackets(rng: random.Random, data: bytearray, _: Sequence[bytes]) -> None:
    positions = [i for i, b in enumerate(data) if b in b"{}[]"]
    if positions:
        i = rng.choice(positions)
        data[i] = {ord("{"): ord("["), ord("["): ord("{"), ord("}"): ord("]"), ord("]"): ord("}")}[data[i]]


Operator = Callable[[random.Random, bytearray, Sequence[bytes]], None]

# Literal replacements come first and weigh most: they keep the body parseable and reach the handlers.
OPERATORS: tuple[tuple[str, Operator, int], ...] = (
    ("replace-string", replace_string, 6),
    ("replace-number", replace_number, 2),
    ("replace-scalar", replace_scalar, 2),
    ("bit-flip", bit_flip, 2),
    ("byte-set", byte_set, 1),
    ("byte-insert", byte_insert, 2),
    ("byte-delete", byte_delete, 1),
    ("byte-duplicate", byte_duplicate, 1),
    ("truncate", truncate, 1),
    ("splice", splice, 1),
    ("swap-brackets", swap_brackets, 1),
)
_NAMES = [name for name, _, weight in OPERATORS for _i in range(weight)]
_BY_NAME = {name: op for name, op, _ in OPERATORS}


class ByteMutator:
    """`next()` yields (operators applied, mutated body), the same sequence for the same seed."""

    def __init__(self, seed: int, seeds: Sequence[bytes] | None = None) -> None:
        self.rng = random.Random(seed)
        self.seeds = list(seeds) if seeds is not None else fixtures()

    def next(self) -> tuple[str, bytes]:
        rng = self.rng
        data = bytearray(rng.choice(self.seeds))
        names = [rng.choice(_NAMES) for _i in range(rng.choice((1, 1, 1, 2, 3, 5)))]  # havoc: stacked operators
        for name in names:
            _BY_NAME[name](rng, data, self.seeds)
        return "+".join(names), bytes(data)
