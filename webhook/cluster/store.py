"""An in-memory store of cluster records, with secondary indexes kept in step on every put and delete."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

R = TypeVar("R")


class Store(Generic[R]):
    """Records by key, plus secondary indexes kept in step on every put and delete."""

    def __init__(self, key: Callable[[R], Hashable], indexers: dict[str, Callable[[R], Iterable[Hashable]]]):
        self._key = key
        self._indexers = indexers
        self.items: dict[Hashable, R] = {}
        self.indexes: dict[str, dict[Hashable, dict[Hashable, R]]] = {name: {} for name in indexers}

    def put(self, record: R) -> None:
        key = self._key(record)
        self._unindex(key)
        self.items[key] = record
        for name, values in self._indexers.items():
            for value in values(record):
                self.indexes[name].setdefault(value, {})[key] = record

    def delete(self, record: R) -> None:
        key = self._key(record)
        self._unindex(key)
        self.items.pop(key, None)

    def _unindex(self, key: Hashable) -> None:
        old = self.items.get(key)
        if old is None:
            return
        for name, values in self._indexers.items():
            for value in values(old):
                bucket = self.indexes[name].get(value)
                if bucket is not None:
                    bucket.pop(key, None)
                    if not bucket:
                        del self.indexes[name][value]

    def get(self, key: Hashable) -> R | None:
        return self.items.get(key)

    def by(self, index: str, value: Hashable) -> list[R]:
        return list(self.indexes[index].get(value, {}).values())

    def __len__(self) -> int:
        return len(self.items)
