"""Admission control in sequences: a bound on what the engine holds plus a bounded FIFO queue; beyond it, refuse.

A request weighs the number of sequences it puts into the engine: prompts x `n` (x `best_of`). The
in-flight bound `max_in_flight` and the queue bound `max_queued` are both counted in sequences, so a
list of 1,024 prompts takes 1,024 units, not one. A request heavier than `max_in_flight` can never run:
`check_room` refuses it with a 400 before anything else is done for it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from inferkube.runtime import refusals


@dataclass(eq=False)
class _Waiter:
    weight: int
    future: asyncio.Future[None]


class AdmissionController:
    """Hands out in-flight sequence slots, queues up to `max_queued` sequences, refuses the rest (429/503)."""

    def __init__(self, max_in_flight: int, max_queued: int, retry_after: float = 1.0) -> None:
        self.max_in_flight = max_in_flight
        self.max_queued = max_queued
        self.retry_after = retry_after
        self.in_flight = 0  # sequences handed to the engine
        self.draining = False
        self._waiters: deque[_Waiter] = deque()
        self._queued_weight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def queued(self) -> int:
        """Sequences waiting for a slot."""
        return self._queued_weight

    def check_open(self) -> None:
        """Raise 503 when draining (cheap check before any other work)."""
        if self.draining:
            raise refusals.server_draining(self.retry_after)

    def check_room(self, weight: int, param: str = "n", *, priority: int = 0) -> None:
        """Refuse now what `acquire` would refuse: 400 if `weight` exceeds the whole bound, 429 when full.

        FIFO: `priority` is accepted (the same call as the priority policy, `FairAdmission`) and ignored.
        """
        self.check_open()
        if weight > self.max_in_flight:
            raise refusals.too_many_sequences(weight, self.max_in_flight, param)
        if self._fits(weight):
            return
        if self._queued_weight + weight > self.max_queued:
            raise refusals.server_overloaded(self.retry_after)

    def _fits(self, weight: int) -> bool:
        return not self._waiters and self.in_flight + weight <= self.max_in_flight

    async def acquire(self, weight: int = 1, *, tenant: str = "", priority: int = 0, cost: float = 1.0,
                      share: int = 1) -> None:
        """Take `weight` in-flight slots, waiting in the FIFO queue if there is room; else raise the refusal.

        FIFO: tenant, priority, cost and share are accepted (the same call as `FairAdmission`) and ignored.
        """
        self.check_room(weight)
        if self._fits(weight):
            self._take(weight)
            return
        waiter = _Waiter(weight, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        self._queued_weight += weight
        try:
            await waiter.future
        except BaseException:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                self._queued_weight -= weight
            elif waiter.future.done() and not waiter.future.cancelled() and waiter.future.exception() is None:
                # The slots were handed to us just as we were cancelled: pass them on.
                self.release(weight)
            raise

    def _take(self, weight: int) -> None:
        self.in_flight += weight
        self._idle.clear()

    def release(self, weight: int = 1, *, priority: int = 0) -> None:
        """Give `weight` slots back and hand free slots to the oldest waiters that fit (strict FIFO; `priority`,
        the same call as `FairAdmission`, is ignored)."""
        self.in_flight = max(0, self.in_flight - weight)
        while self._waiters:
            head = self._waiters[0]
            if head.future.done():  # cancelled meanwhile
                self._waiters.popleft()
                self._queued_weight -= head.weight
                continue
            if self.in_flight + head.weight > self.max_in_flight:
                break
            self._waiters.popleft()
            self._queued_weight -= head.weight
            self.in_flight += head.weight
            head.future.set_result(None)
        if self.in_flight == 0 and not self._waiters:
            self._idle.set()

    def start_draining(self) -> None:
        """Refuse new requests from now on; queued requests still get served."""
        self.draining = True

    def refuse_queued(self) -> int:
        """At the drain deadline: answer every queued request 503 `server_draining`; returns how many."""
        refused = 0
        while self._waiters:
            waiter = self._waiters.popleft()
            self._queued_weight -= waiter.weight
            if not waiter.future.done():
                waiter.future.set_exception(refusals.server_draining(self.retry_after))
                refused += 1
        if self.in_flight == 0:
            self._idle.set()
        return refused

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is in flight or queued; True if that happened within `timeout` seconds."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False
