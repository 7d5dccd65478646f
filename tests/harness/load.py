"""An open-model load loop over TLS with keep-alive and connection recycling (tests and the soak run)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

from tests.harness.builders import admission_review, controller_pod
from tests.harness.pki import trust

BODY = orjson.dumps(admission_review(controller_pod(), dry_run=True))
HEADERS = {"Content-Type": "application/json"}


@dataclass
class Load:
    sent: int = 0
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)


async def constant_load(url: str, ca: Path, rate: float, seconds: float, load: Load, connections: int = 4) -> None:
    """`rate` requests/s for `seconds` (or until load.stop), each client recycled every 50 requests."""
    ctx = trust(ca)

    def client() -> httpx.AsyncClient:
        return httpx.AsyncClient(verify=ctx, timeout=10, limits=httpx.Limits(max_connections=1))

    clients = [client() for _ in range(connections)]
    retired: list[httpx.AsyncClient] = []
    tasks: set[asyncio.Task[None]] = set()

    async def one(i: int) -> None:
        c = clients[i % connections]
        try:
            resp = await c.post(url, content=BODY, headers=HEADERS)
            if resp.status_code == 200 and resp.json()["response"]["allowed"] is True:
                load.ok += 1
            else:
                load.failures.append(f"HTTP {resp.status_code}")
        except httpx.HTTPError as exc:
            load.failures.append(type(exc).__name__)

    start = time.monotonic()
    i = 0
    while not load.stop.is_set() and time.monotonic() - start < seconds:
        target = start + i / rate
        await asyncio.sleep(max(0.0, target - time.monotonic()))
        load.sent += 1
        task = asyncio.create_task(one(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        i += 1
        if i % 50 == 0:  # recycle a connection: a fresh TLS handshake
            retired.append(clients[(i // 50) % connections])  # closed at the end: its requests may be in flight
            clients[(i // 50) % connections] = client()
    if tasks:
        await asyncio.gather(*tasks)
    for c in clients + retired:
        await c.aclose()
