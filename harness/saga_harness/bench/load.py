"""Submits orders over REST: open loop at a fixed rate, or closed loop with N clients.

Open loop measures each saga from the moment its order was *due* to be sent, not
from when the client got round to sending it, so a slow system cannot hide its
latency by slowing the client down (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

__all__ = ["Authorize", "Completions", "LoadResult", "anonymous", "closed_loop", "open_loop"]

OrderBody = Callable[[random.Random], dict[str, Any]]
# The headers that authorize one order's request (its customer's bearer token).
Authorize = Callable[[dict[str, Any]], dict[str, str]]


def anonymous(_body: dict[str, Any]) -> dict[str, str]:
    return {}


class Completions:
    """Final states reported by the observer's thread, awaited from the driver's loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.done: dict[str, tuple[str, float]] = {}  # order id -> (status, time)
        self._waiters: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = {}

    def __len__(self) -> int:
        return len(self.done)

    def record(self, order_id: str, status: str, at: float) -> None:
        with self._lock:
            if order_id in self.done:
                return  # a redelivered final event
            self.done[order_id] = (status, at)
            waiter = self._waiters.pop(order_id, None)
        if waiter is not None:
            loop, future = waiter
            loop.call_soon_threadsafe(_resolve, future)

    async def wait(self, order_id: str) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if order_id in self.done:
                return
            self._waiters[order_id] = (loop, future)
        await future


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass
class LoadResult:
    submitted: dict[str, float] = field(default_factory=dict)  # order id -> start time
    rejected: dict[str, int] = field(default_factory=dict)  # "HTTP 503" / error -> count
    started: float = 0.0
    finished: float = 0.0  # when the last order was sent
    max_send_delay: float = 0.0  # how far the client fell behind its schedule


async def _post(
    session: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    result: LoadResult,
    authorize: Authorize,
) -> str | None:
    try:
        async with session.post(url, json=body, headers=authorize(body)) as response:
            if response.status == 202:
                return str((await response.json())["order_id"])
            key = f"HTTP {response.status}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        key = type(exc).__name__
    result.rejected[key] = result.rejected.get(key, 0) + 1
    return None


# Idle connections are dropped before the server's keep-alive (uvicorn's 5 s) ends them:
# otherwise a closed-loop client that waited longer than that for its saga reuses a
# connection the server is closing, and its next order fails ServerDisconnectedError.
KEEPALIVE_SECONDS = 2.0


def _session(connections: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections, keepalive_timeout=KEEPALIVE_SECONDS),
        timeout=aiohttp.ClientTimeout(total=30),
    )


async def open_loop(
    url: str,
    body: OrderBody,
    *,
    rate: float,
    duration: float,
    seed: int,
    connections: int = 256,
    progress: Callable[[LoadResult], None] | None = None,
    authorize: Authorize = anonymous,
) -> LoadResult:
    """Send ``rate`` orders per second for ``duration`` seconds, whatever the answers;
    ``authorize(body)`` gives each request's headers (its customer's token)."""
    rng = random.Random(seed)
    result = LoadResult()
    total = int(rate * duration)
    async with _session(connections) as session:

        async def one(due: float) -> None:
            order_id = await _post(session, url, body(rng), result, authorize)
            if order_id is not None:
                result.submitted[order_id] = due

        tasks: set[asyncio.Task[None]] = set()
        result.started = time.time()
        next_progress = result.started + 1
        for i in range(total):
            due = result.started + i / rate
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                result.max_send_delay = max(result.max_send_delay, -delay)
            task = asyncio.create_task(one(due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if progress is not None and time.time() >= next_progress:
                progress(result)
                next_progress += 1
        result.finished = time.time()
        if tasks:
            await asyncio.gather(*tasks)
    return result


async def closed_loop(
    url: str,
    body: OrderBody,
    completions: Completions,
    *,
    clients: int,
    duration: float,
    seed: int,
    progress: Callable[[LoadResult], None] | None = None,
    authorize: Authorize = anonymous,
) -> LoadResult:
    """``clients`` clients, each submitting an order and waiting for its saga to finish."""
    rng = random.Random(seed)
    result = LoadResult()
    result.started = time.time()
    end = result.started + duration
    async with _session(clients) as session:

        async def client() -> None:
            while time.time() < end:
                start = time.time()
                order_id = await _post(session, url, body(rng), result, authorize)
                if order_id is None:
                    await asyncio.sleep(0.1)
                    continue
                result.submitted[order_id] = start
                try:
                    await asyncio.wait_for(completions.wait(order_id), timeout=60)
                except TimeoutError:
                    result.rejected["no final state within 60 s"] = (
                        result.rejected.get("no final state within 60 s", 0) + 1
                    )

        async def report() -> None:
            while progress is not None and time.time() < end:
                await asyncio.sleep(1)
                progress(result)

        await asyncio.gather(report(), *(client() for _ in range(clients)))
    result.finished = time.time()
    return result
