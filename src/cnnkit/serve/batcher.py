"""Concurrent requests onto one model call: up to ``max_batch`` images, or what arrived within
``max_wait_ms`` of the first, whichever comes first.

Requests wait in a bounded queue (a full one is the caller's 503); one worker thread runs the
predictor, so the event loop keeps accepting, decoding and refusing while a batch computes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnkit.serve.priority import lower_this_thread


class QueueFull(Exception):
    """More requests are waiting than the queue holds."""


@dataclass
class _Item:
    image: np.ndarray
    future: asyncio.Future


class Batcher:
    """Collects images into batches for ``predict`` (a list of images -> a list of results)."""

    def __init__(
        self,
        predict: Callable[[list[np.ndarray]], list[Any]],
        max_batch: int = 8,
        max_wait_ms: float = 5.0,
        queue_size: int = 64,
        on_batch: Callable[[int, float], None] | None = None,
        thread_nice: int = 0,
    ) -> None:
        if max_batch < 1 or queue_size < 1 or max_wait_ms < 0:
            raise ValueError("max_batch and queue_size must be >= 1, max_wait_ms >= 0")
        self.predict = predict
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.queue_size = queue_size
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task | None = None
        # the model's thread below the event loop's priority (serve.priority)
        self._executor = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="cnnkit-model",
            initializer=lower_this_thread,
            initargs=(thread_nice,),
        )

    async def start(self) -> None:
        self._queue = asyncio.Queue(self.queue_size)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True, cancel_futures=True)

    @property
    def waiting(self) -> int:
        return 0 if self._queue is None else self._queue.qsize()

    async def submit(self, image: np.ndarray) -> Any:
        """The predictor's result for one image; QueueFull at once when the queue is full."""
        assert self._queue is not None, "Batcher.start() first"
        future = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Item(image, future))
        except asyncio.QueueFull:
            raise QueueFull from None
        return await future

    async def run_in_model_thread(self, func: Callable[[], Any]) -> Any:
        """Run ``func`` on the model's thread (warm-up), after any batch in progress."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, func)

    async def _next_batch(self) -> list[_Item]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                while len(batch) < self.max_batch and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            live = [item for item in batch if not item.future.cancelled()]
            if not live:
                continue
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(
                    self._executor, self.predict, [item.image for item in live]
                )
            except Exception as exc:  # the batch's callers get the error; the worker goes on
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            if self.on_batch is not None:
                self.on_batch(len(live), time.perf_counter() - started)
            for item, result in zip(live, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)
