"""A bound on the decoded pixels a server holds at once.

An upload is small on the wire but large once decoded: a 100 KB PNG of 6000x6000 flat pixels
is 108 MB of RGB, and detectors and segmenters keep images at their own size until the model's
thread letterboxes them. Without a bound, a burst of such uploads (each under the byte and
pixel limits) held gigabytes. Each request takes its pixel count (known from the header) from
this budget before decoding and gives it back once the model has answered; a request that does
not fit waits, holding only its compressed bytes. One image larger than the whole budget still
runs, alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class PixelBudget:
    """At most ``limit`` decoded pixels in flight (an image over the limit runs alone)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the pixel budget must be positive")
        self.limit = limit
        self.in_flight = 0
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def hold(self, pixels: int) -> AsyncIterator[None]:
        """Wait until ``pixels`` fit beside those in flight, hold them for the block."""
        async with self._changed:
            await self._changed.wait_for(
                lambda: self.in_flight == 0 or self.in_flight + pixels <= self.limit
            )
            self.in_flight += pixels
        try:
            yield
        finally:
            async with self._changed:
                self.in_flight -= pixels
                self._changed.notify_all()
