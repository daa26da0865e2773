"""Priority and weighted fair-share admission: who gets the next in-flight slot when the engine is saturated.

Waiting requests are admitted by priority first (higher first); among equal priority, by start-time
fair queueing between tenants: each tenant has a virtual time that advances by a request's estimated
tokens divided by the tenant's weight, and the waiting tenant with the smallest virtual time goes next.
A tenant that was idle starts at the current virtual time, so idling earns no burst credit, and one
tenant's burst cannot starve another of the same priority. A request more important than everything in
flight and everything waiting may use a few slots of headroom beyond max_in_flight instead of waiting
for a slot: the engine (vLLM with --scheduling-policy priority) then schedules it ahead of, and if need
be preempts, the less important work it holds. When the queue is full, the least important
waiter (lowest priority, then the tenant furthest ahead of its share, then the newest) is shed with a
429 and Retry-After so a more important request can wait instead; low priority is shed first.

Like `AdmissionController` (whose subclass it is: one admission concept, two queue orders), everything is
counted in sequences: a request weighs prompts x `n`, `check_room` refuses early (400 `too_many_sequences`
for more than the whole bound, 429 when neither a slot nor the queue, after shedding what is less
important, has room), the queue bound is a bound on queued sequences, and at the drain deadline
`refuse_queued` answers every waiter 503 `server_draining`. A tenant's fair-share weight is `share`.

Written here rather than taken from a library: asyncio has no priority/fair semaphore, and the
shedding, cancel and drain rules must match AdmissionController's exactly (~200 lines).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from inferkube.runtime import refusals
from inferkube.runtime.admission import AdmissionController
from inferkube.runtime.errors import ApiError


def priority_headroom(max_in_flight: int) -> int:
    """Slots beyond max_in_flight that a request outranking all others may use instead of waiting (1/8)."""
    return max(1, max_in_flight // 8)


def engine_batch_for(max_in_flight: int) -> int:
    """The engine batch (vLLM `--max-num-seqs`) that holds every admitted sequence plus the headroom, so a
    request that jumps the queue is scheduled in the engine's next step instead of waiting for a batch slot."""
    return max_in_flight + priority_headroom(max_in_flight)


@dataclass(eq=False)
class _Waiter:
    """One queued request."""

    tenant: str
    priority: int
    cost: float
    share: int   # the tenant's fair-share weight
    weight: int  # sequences it puts into the engine
    seq: int
    future: asyncio.Future[None] = field(repr=False)


class FairAdmission(AdmissionController):
    """In-flight sequence slots handed out by priority, then weighted fair share; bounded queue; shed lowest first."""

    def __init__(self, max_in_flight: int, max_queued: int, retry_after: float = 1.0,
                 on_shed: Callable[[str, int], None] | None = None, headroom: int | None = None) -> None:
        super().__init__(max_in_flight, max_queued, retry_after)
        self.headroom = priority_headroom(max_in_flight) if headroom is None else headroom
        self._running: dict[int, int] = {}  # sequences in flight per priority
        self._on_shed = on_shed
        self._queues: dict[int, dict[str, deque[_Waiter]]] = {}
        self._vtime: dict[str, float] = {}
        self._clock = 0.0   # virtual time of the last request let in
        self._seq = 0

    def queued_by_priority(self) -> dict[int, int]:
        """Waiting sequences per priority."""
        return {p: sum(w.weight for q in tenants.values() for w in q) for p, tenants in self._queues.items()}

    def _charge(self, tenant: str, cost: float, share: int) -> None:
        """Advance the tenant's virtual time for one admitted request; idle tenants start at the clock."""
        start = max(self._vtime.get(tenant, 0.0), self._clock)
        self._clock = start
        self._vtime[tenant] = start + max(1.0, cost) / max(1, share)

    def _fits(self, weight: int) -> bool:
        return not self._queues and self.in_flight + weight <= self.max_in_flight

    def _sheddable(self, priority: int) -> int:
        """Queued sequences less important than `priority` (what shedding could free for it)."""
        return sum(w.weight for p, tenants in self._queues.items() if p < priority
                   for q in tenants.values() for w in q)

    def check_room(self, weight: int, param: str = "n", *, priority: int = 0) -> None:
        """Refuse now what `acquire` would refuse: 400 if `weight` exceeds the whole bound, 429 when neither a
        slot (or the headroom of a request outranking all others) nor the queue, after shedding, has room."""
        self.check_open()
        if weight > self.max_in_flight:
            raise refusals.too_many_sequences(weight, self.max_in_flight, param)
        if self._fits(weight) or self._may_jump(priority, weight):
            return
        if self._queued_weight + weight > self.max_queued \
                and self._queued_weight - self._sheddable(priority) + weight > self.max_queued:
            raise refusals.server_overloaded(self.retry_after)

    async def acquire(self, weight: int = 1, *, tenant: str = "", priority: int = 0, cost: float = 1.0,
                      share: int = 1) -> None:
        """Take `weight` in-flight slots, waiting by priority and fair share; raise ApiError (400/429/503) when refused."""
        self.check_room(weight, priority=priority)
        if self._fits(weight) or self._may_jump(priority, weight):
            self._charge(tenant, cost, share)
            self._take_for(priority, weight)
            return
        while self._queued_weight + weight > self.max_queued:
            self._shed_one()
        waiter = _Waiter(tenant, priority, cost, share, weight, self._seq, asyncio.get_running_loop().create_future())
        self._seq += 1
        tenants = self._queues.setdefault(priority, {})
        if tenant not in tenants or not tenants[tenant]:
            self._vtime[tenant] = max(self._vtime.get(tenant, 0.0), self._clock)
        tenants.setdefault(tenant, deque()).append(waiter)
        self._queued_weight += weight
        try:
            await waiter.future
        except BaseException:
            if not self._remove(waiter) and waiter.future.done() and not waiter.future.cancelled() \
                    and waiter.future.exception() is None:
                # The slots were handed to us just as we were cancelled: pass them on.
                self.release(weight, priority=priority)
            raise

    def _may_jump(self, priority: int, weight: int) -> bool:
        """True when a request of `priority` outranks all work in flight and waiting and headroom is left."""
        if self.in_flight + weight > self.max_in_flight + self.headroom or not self._running:
            return False
        waiting_top = max(self._queues, default=None)
        return priority > min(self._running) and (waiting_top is None or priority > waiting_top)

    def _take_for(self, priority: int, weight: int) -> None:
        self._take(weight)
        self._running[priority] = self._running.get(priority, 0) + weight

    def _remove(self, waiter: _Waiter) -> bool:
        """Take a waiter out of its queue; False when it is no longer queued."""
        queue = self._queues.get(waiter.priority, {}).get(waiter.tenant)
        if queue is None or waiter not in queue:
            return False
        queue.remove(waiter)
        self._queued_weight -= waiter.weight
        tenants = self._queues[waiter.priority]
        if not queue:
            del tenants[waiter.tenant]
            if not tenants:
                del self._queues[waiter.priority]
        return True

    def _shed_one(self) -> None:
        """Refuse the least important waiter (lowest priority, the tenant furthest ahead, its newest) with a 429."""
        tenants = self._queues[min(self._queues)]
        tenant = max(tenants, key=lambda t: (self._vtime.get(t, 0.0), t))
        victim = tenants[tenant][-1]
        self._remove(victim)
        if victim.future.done():  # cancelled meanwhile: its place is free without refusing anyone
            return
        error: ApiError = refusals.shed(self.retry_after)
        victim.future.set_exception(error)
        if self._on_shed is not None:
            self._on_shed(victim.tenant, victim.priority)

    def _head(self) -> _Waiter | None:
        """The waiter to admit next: highest priority, then smallest tenant virtual time, then oldest."""
        if not self._queues:
            return None
        tenants = self._queues[max(self._queues)]
        tenant = min(tenants, key=lambda t: (self._vtime.get(t, 0.0), tenants[t][0].seq))
        return tenants[tenant][0]

    def release(self, weight: int = 1, *, priority: int = 0) -> None:
        """Give back `weight` slots of a request of `priority`, then admit the next waiters while they fit."""
        self.in_flight = max(0, self.in_flight - weight)
        left = self._running.get(priority, 0) - weight
        if left > 0:
            self._running[priority] = left
        else:
            self._running.pop(priority, None)
        while (waiter := self._head()) is not None:
            if waiter.future.done():  # cancelled meanwhile
                self._remove(waiter)
                continue
            if self.in_flight + waiter.weight > self.max_in_flight:
                break
            self._remove(waiter)
            self._charge(waiter.tenant, waiter.cost, waiter.share)
            self._take_for(waiter.priority, waiter.weight)
            waiter.future.set_result(None)
        if self.in_flight == 0 and not self._queues:
            self._idle.set()

    def refuse_queued(self) -> int:
        """At the drain deadline: answer every queued request 503 `server_draining`; returns how many."""
        refused = 0
        for tenants in self._queues.values():
            for queue in tenants.values():
                for waiter in queue:
                    if not waiter.future.done():
                        waiter.future.set_exception(refusals.server_draining(self.retry_after))
                        refused += 1
        self._queues.clear()
        self._queued_weight = 0
        if self.in_flight == 0:
            self._idle.set()
        return refused
