"""AdmissionController: bounded in-flight slots, a bounded FIFO queue, immediate refusals, drain."""

from __future__ import annotations

import asyncio

import pytest

from inferkube.runtime.admission import AdmissionController
from inferkube.runtime.errors import ApiError


async def test_slots_then_queue_then_429() -> None:
    adm = AdmissionController(max_in_flight=2, max_queued=1)
    await adm.acquire()
    await adm.acquire()
    waiter = asyncio.ensure_future(adm.acquire())
    await asyncio.sleep(0)
    assert adm.queued == 1 and not waiter.done()
    with pytest.raises(ApiError) as exc:
        await adm.acquire()
    assert exc.value.status == 429 and exc.value.reason == "admission" and exc.value.headers["Retry-After"] == "1"
    adm.release()
    await asyncio.wait_for(waiter, 1)
    assert adm.in_flight == 2 and adm.queued == 0


async def test_queue_is_fifo() -> None:
    adm = AdmissionController(max_in_flight=1, max_queued=3)
    await adm.acquire()
    order: list[int] = []

    async def take(i: int) -> None:
        await adm.acquire()
        order.append(i)

    tasks = [asyncio.ensure_future(take(i)) for i in range(3)]
    await asyncio.sleep(0)
    for _ in range(3):
        adm.release()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]


async def test_cancelled_waiter_leaves_the_queue() -> None:
    adm = AdmissionController(max_in_flight=1, max_queued=1)
    await adm.acquire()
    waiter = asyncio.ensure_future(adm.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert adm.queued == 0
    adm.release()
    assert adm.in_flight == 0


async def test_draining_refuses_with_503_and_waits_for_idle() -> None:
    adm = AdmissionController(max_in_flight=4, max_queued=4)
    await adm.acquire()
    adm.start_draining()
    with pytest.raises(ApiError) as exc:
        await adm.acquire()
    assert exc.value.status == 503
    assert await adm.wait_idle(0.05) is False
    asyncio.get_running_loop().call_later(0.05, adm.release)
    assert await adm.wait_idle(2) is True


async def test_requests_weigh_their_sequences() -> None:
    adm = AdmissionController(max_in_flight=4, max_queued=4)
    await adm.acquire(3)
    waiter = asyncio.ensure_future(adm.acquire(2))  # 3 + 2 > 4: waits
    await asyncio.sleep(0)
    assert adm.in_flight == 3 and adm.queued == 2 and not waiter.done()
    with pytest.raises(ApiError) as exc:
        adm.check_room(3)  # 2 queued + 3 > 4
    assert exc.value.status == 429
    with pytest.raises(ApiError) as exc:
        adm.check_room(5, "prompt")  # can never run
    assert exc.value.status == 400 and exc.value.param == "prompt" and "5 sequences" in exc.value.message
    adm.release(3)
    await asyncio.wait_for(waiter, 1)
    assert adm.in_flight == 2 and adm.queued == 0


async def test_drain_deadline_refuses_the_queue_with_503() -> None:
    adm = AdmissionController(max_in_flight=1, max_queued=2)
    await adm.acquire()
    waiters = [asyncio.ensure_future(adm.acquire()) for _ in range(2)]
    await asyncio.sleep(0)
    adm.start_draining()
    assert adm.refuse_queued() == 2
    for w in waiters:
        with pytest.raises(ApiError) as exc:
            await w
        assert exc.value.status == 503 and exc.value.code == "server_draining" and exc.value.headers["Retry-After"]
    assert adm.queued == 0 and adm.in_flight == 1
