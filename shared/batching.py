"""Group commit: callers submit one item each and wait; a single worker processes whatever has queued up
as one batch (one transaction), so a lone caller pays no added delay and a crowd shares one commit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from shared import logs

T = TypeVar("T")
R = TypeVar("R")
log = logs.get_logger(__name__)


@dataclass
class _Waiting(Generic[T, R]):
    item: T
    future: asyncio.Future[R]
    correlation_id: str


class GroupCommit(Generic[T, R]):
    """``process(items, correlation_ids)`` returns one result per item, in order.

    If a batch fails, its items are retried one by one, so one bad item fails alone.
    """

    def __init__(
        self,
        name: str,
        process: Callable[[Sequence[T], Sequence[str]], Awaitable[Sequence[R]]],
        max_batch: int,
    ) -> None:
        self.name = name
        self._process = process
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Waiting[T, R]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Waiting(item, future, logs.correlation_id.get()))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._resolve(batch)
            except Exception as exc:
                if len(batch) == 1:
                    _fail(batch[0], exc)
                    continue
                log.warning("batch_failed_splitting", batcher=self.name, size=len(batch), error=repr(exc))
                for one in batch:
                    try:
                        await self._resolve([one])
                    except Exception as one_exc:
                        _fail(one, one_exc)

    async def _resolve(self, batch: list[_Waiting[T, R]]) -> None:
        results = await self._process([w.item for w in batch], [w.correlation_id for w in batch])
        for waiting, result in zip(batch, results, strict=True):
            if not waiting.future.done():
                waiting.future.set_result(result)


def _fail(waiting: _Waiting[Any, Any], exc: BaseException) -> None:
    if not waiting.future.done():
        waiting.future.set_exception(exc)


def first_by_key(items: Sequence[T], key: Callable[[T], Hashable]) -> dict[Hashable, int]:
    """Index of the first item per key (later duplicates share its result)."""
    seen: dict[Hashable, int] = {}
    for i, item in enumerate(items):
        seen.setdefault(key(item), i)
    return seen
