"""Admission control: a bound on requests in flight plus a bounded FIFO queue; beyond it, refuse at once."""

from __future__ import annotations

import asyncio
from collections import deque

from inferkube.runtime import refusals


class AdmissionController:
    """Hands out in-flight slots, queues up to `max_queued` waiters, refuses the rest (429/503)."""

    def __init__(self, max_in_flight: int, max_queued: int, retry_after: float = 1.0) -> None:
        self.max_in_flight = max_in_flight
        self.max_queued = max_queued
        self.retry_after = retry_after
        self.in_flight = 0
        self.draining = False
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def queued(self) -> int:
        """Requests waiting for a slot."""
        return len(self._waiters)

    def check_open(self) -> None:
        """Raise 503 when draining (cheap check before any other work)."""
        if self.draining:
            raise refusals.server_draining(self.retry_after)

    async def acquire(self) -> None:
        """Take an in-flight slot, waiting in the queue if there is room; else raise the 429 refusal."""
        self.check_open()
        if self.in_flight < self.max_in_flight and not self._waiters:
            self._take()
            return
        if len(self._waiters) >= self.max_queued:
            raise refusals.server_overloaded(self.retry_after)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            elif waiter.done() and not waiter.cancelled():
                # The slot was handed to us just as we were cancelled: pass it on.
                self.release()
            raise

    def _take(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def release(self) -> None:
        """Give a slot back, handing it to the oldest waiter if any."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot moves to the waiter; in_flight unchanged
                return
        self.in_flight -= 1
        if self.in_flight <= 0:
            self.in_flight = 0
            self._idle.set()

    def start_draining(self) -> None:
        """Refuse new requests from now on; queued requests still get served."""
        self.draining = True

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is in flight or queued; True if that happened within `timeout` seconds."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False
