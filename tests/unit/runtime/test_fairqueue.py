"""FairAdmission: priority first, weighted fair share among equal priority, low priority shed first, drain."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from inferkube.runtime.errors import ApiError
from inferkube.runtime.fairqueue import FairAdmission


async def _queue(adm: FairAdmission, order: list[str], label: str, **kw: Any) -> asyncio.Task[None]:
    async def take() -> None:
        await adm.acquire(**kw)
        order.append(label)

    task = asyncio.ensure_future(take())
    await asyncio.sleep(0)
    return task


async def _drain_one_by_one(adm: FairAdmission, tasks: list[asyncio.Task[None]]) -> None:
    for _ in tasks:
        adm.release()
        await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 2)


async def test_free_slots_admit_at_once_and_the_queue_is_bounded() -> None:
    adm = FairAdmission(max_in_flight=2, max_queued=1)
    await adm.acquire(tenant="a")
    await adm.acquire(tenant="a")
    waiter = asyncio.ensure_future(adm.acquire(tenant="a"))
    await asyncio.sleep(0)
    assert adm.queued == 1 and not waiter.done()
    with pytest.raises(ApiError) as exc:
        await adm.acquire(tenant="a")
    assert exc.value.status == 429 and exc.value.headers["Retry-After"] == "1"
    adm.release()
    await asyncio.wait_for(waiter, 1)
    assert (adm.in_flight, adm.queued) == (2, 0)


async def test_higher_priority_goes_first() -> None:
    adm = FairAdmission(max_in_flight=1, max_queued=10)
    await adm.acquire(tenant="x")
    order: list[str] = []
    tasks = [await _queue(adm, order, "low", tenant="bulk", priority=-100),
             await _queue(adm, order, "normal", tenant="b", priority=0),
             await _queue(adm, order, "high", tenant="ui", priority=100)]
    await _drain_one_by_one(adm, tasks)
    assert order == ["high", "normal", "low"]


async def test_equal_priority_tenants_share_fairly_despite_a_burst() -> None:
    adm = FairAdmission(max_in_flight=1, max_queued=100)
    await adm.acquire(tenant="x")
    order: list[str] = []
    tasks = [await _queue(adm, order, "burst", tenant="burst", cost=100) for _ in range(20)]
    tasks += [await _queue(adm, order, "small", tenant="small", cost=100) for _ in range(3)]
    await _drain_one_by_one(adm, tasks)
    assert "small" in order[:2] and order.index("small") < 3
    first_eight = Counter(order[:8])
    assert first_eight["small"] == 3, "the late tenant is interleaved, not queued behind the burst"


async def test_weights_split_admissions_in_proportion() -> None:
    adm = FairAdmission(max_in_flight=1, max_queued=200)
    await adm.acquire(tenant="x")
    order: list[str] = []
    tasks = [await _queue(adm, order, t, tenant=t, cost=10, share=w) for _ in range(40) for t, w in (("heavy", 3), ("light", 1))]
    await _drain_one_by_one(adm, tasks)
    share = Counter(order[:40])
    assert 28 <= share["heavy"] <= 32 and 8 <= share["light"] <= 12


async def test_costly_requests_count_more_than_cheap_ones() -> None:
    adm = FairAdmission(max_in_flight=1, max_queued=200)
    await adm.acquire(tenant="x")
    order: list[str] = []
    tasks = [await _queue(adm, order, t, tenant=t, cost=c) for _ in range(20) for t, c in (("long", 400), ("short", 100))]
    await _drain_one_by_one(adm, tasks)
    share = Counter(order[:20])
    assert share["short"] >= 3 * share["long"] - 1


async def test_an_idle_tenant_earns_no_credit() -> None:
    adm = FairAdmission(max_in_flight=1, max_queued=100)
    for _ in range(50):  # busy tenant runs alone for a while
        await adm.acquire(tenant="busy", cost=10)
        adm.release()
    await adm.acquire(tenant="x")
    order: list[str] = []
    tasks = [await _queue(adm, order, "busy", tenant="busy", cost=10) for _ in range(10)]
    tasks += [await _queue(adm, order, "new", tenant="new", cost=10) for _ in range(10)]
    await _drain_one_by_one(adm, tasks)
    assert Counter(order[:10])["new"] <= 6, "a newcomer does not get the busy tenant's whole history as credit"
    assert Counter(order[:10])["busy"] >= 4


async def test_full_queue_sheds_the_lowest_priority_waiter_for_a_more_important_request() -> None:
    shed: list[tuple[str, int]] = []
    adm = FairAdmission(max_in_flight=1, max_queued=2, on_shed=lambda t, p: shed.append((t, p)), headroom=0)
    await adm.acquire(tenant="x")
    low1 = asyncio.ensure_future(adm.acquire(tenant="bulk", priority=-100))
    low2 = asyncio.ensure_future(adm.acquire(tenant="bulk", priority=-100))
    await asyncio.sleep(0)
    high = asyncio.ensure_future(adm.acquire(tenant="ui", priority=100))
    await asyncio.sleep(0)
    with pytest.raises(ApiError) as exc:
        await asyncio.wait_for(low2, 1)
    assert exc.value.status == 429 and "Retry-After" in exc.value.headers
    assert shed == [("bulk", -100)] and not low1.done() and adm.queued == 2
    with pytest.raises(ApiError):
        await adm.acquire(tenant="bulk", priority=-100)  # equal to the lowest waiting: refused, nobody shed
    adm.release()
    await asyncio.wait_for(high, 1)
    adm.release()
    await asyncio.wait_for(low1, 1)


async def test_a_request_that_outranks_everything_uses_headroom_instead_of_waiting() -> None:
    adm = FairAdmission(max_in_flight=2, max_queued=10, headroom=1)
    await adm.acquire(tenant="bulk", priority=-100)
    await adm.acquire(tenant="bulk", priority=-100)
    queued = asyncio.ensure_future(adm.acquire(tenant="bulk", priority=-100))
    await asyncio.sleep(0)
    await asyncio.wait_for(adm.acquire(tenant="ui", priority=100), 1)  # straight in: the engine preempts for it
    assert adm.in_flight == 3 and not queued.done()
    second = asyncio.ensure_future(adm.acquire(tenant="ui", priority=100))
    await asyncio.sleep(0)
    assert not second.done(), "headroom is bounded"
    equal = asyncio.ensure_future(adm.acquire(tenant="b", priority=-100))
    await asyncio.sleep(0)
    assert not equal.done(), "no jump without outranking what runs"
    adm.release(priority=100)   # the first ui request ends: in flight 2 = max, nobody admitted yet
    assert not second.done()
    adm.release(priority=-100)  # a bulk request ends: the waiting ui request goes first
    await asyncio.wait_for(second, 1)
    assert not queued.done()
    for task in (queued, equal):
        task.cancel()


async def test_cancelled_waiter_leaves_the_queue_and_a_handed_slot_is_passed_on() -> None:
    adm = FairAdmission(max_in_flight=1, max_queued=5)
    await adm.acquire(tenant="x")
    gone = asyncio.ensure_future(adm.acquire(tenant="a"))
    nxt = asyncio.ensure_future(adm.acquire(tenant="b"))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    assert adm.queued == 1
    adm.release()
    await asyncio.wait_for(nxt, 1)
    late = asyncio.ensure_future(adm.acquire(tenant="c"))
    await asyncio.sleep(0)
    adm.release()      # nxt's slot goes to `late` ...
    late.cancel()      # ... which is cancelled before it runs: the slot must come back, not leak
    await asyncio.gather(late, return_exceptions=True)
    assert adm.in_flight == 0 and adm.queued == 0
    assert await adm.wait_idle(0.1)


async def test_drain_refuses_new_requests_and_waits_for_the_rest() -> None:
    adm = FairAdmission(max_in_flight=1, max_queued=5)
    await adm.acquire(tenant="a")
    queued = asyncio.ensure_future(adm.acquire(tenant="b"))
    await asyncio.sleep(0)
    adm.start_draining()
    with pytest.raises(ApiError) as exc:
        await adm.acquire(tenant="c")
    assert exc.value.status == 503
    assert not await adm.wait_idle(0.05)
    adm.release()
    await asyncio.wait_for(queued, 1)
    adm.release()
    assert await adm.wait_idle(1)


async def test_requests_weigh_their_sequences_as_in_the_fifo_controller() -> None:
    adm = FairAdmission(max_in_flight=4, max_queued=4, headroom=0)
    await adm.acquire(3, tenant="a")
    waiter = asyncio.ensure_future(adm.acquire(2, tenant="b"))  # 3 + 2 > 4: waits
    await asyncio.sleep(0)
    assert adm.in_flight == 3 and adm.queued == 2 and not waiter.done()
    assert adm.queued_by_priority() == {0: 2}
    with pytest.raises(ApiError) as exc:
        adm.check_room(3)  # 2 queued + 3 > 4
    assert exc.value.status == 429 and exc.value.code == "server_overloaded"
    with pytest.raises(ApiError) as exc:
        adm.check_room(5, "prompt")  # can never run
    assert exc.value.status == 400 and exc.value.param == "prompt" and "5 sequences" in exc.value.message
    with pytest.raises(ApiError) as exc:
        await adm.acquire(5, tenant="c")
    assert exc.value.status == 400
    adm.release(3)
    await asyncio.wait_for(waiter, 1)
    assert adm.in_flight == 2 and adm.queued == 0
    adm.release(2)
    assert adm.in_flight == 0 and await adm.wait_idle(0.1)


async def test_a_heavy_request_sheds_as_many_less_important_sequences_as_it_needs() -> None:
    shed: list[tuple[str, int]] = []
    adm = FairAdmission(max_in_flight=4, max_queued=4, on_shed=lambda t, p: shed.append((t, p)), headroom=0)
    await adm.acquire(4, tenant="x")
    lows = [asyncio.ensure_future(adm.acquire(2, tenant="bulk", priority=-100)) for _ in range(2)]
    await asyncio.sleep(0)
    assert adm.queued == 4
    with pytest.raises(ApiError) as exc:
        adm.check_room(1, priority=-100)  # nothing less important to shed
    assert exc.value.status == 429
    adm.check_room(3, priority=100)  # room once two bulk requests are shed
    high = asyncio.ensure_future(adm.acquire(3, tenant="ui", priority=100))
    await asyncio.sleep(0)
    assert shed == [("bulk", -100), ("bulk", -100)] and adm.queued == 3
    for low in lows:
        with pytest.raises(ApiError) as exc:
            await low
        assert exc.value.status == 429
    adm.release(4)
    await asyncio.wait_for(high, 1)
    assert adm.in_flight == 3 and adm.queued == 0


async def test_drain_deadline_refuses_the_queue_with_503() -> None:
    adm = FairAdmission(max_in_flight=1, max_queued=3)
    await adm.acquire(tenant="a")
    waiters = [asyncio.ensure_future(adm.acquire(tenant=t, priority=p)) for t, p in (("b", 0), ("c", -5))]
    await asyncio.sleep(0)
    adm.start_draining()
    assert adm.refuse_queued() == 2
    for w in waiters:
        with pytest.raises(ApiError) as exc:
            await w
        assert exc.value.status == 503 and exc.value.code == "server_draining" and exc.value.headers["Retry-After"]
    assert adm.queued == 0 and adm.in_flight == 1
    assert not await adm.wait_idle(0.01)
    adm.release()
    assert await adm.wait_idle(0.1)
