"""The deadline wheel of waiting long-polls (tornado_app/realtime/deadlines.py): one loop timer,
timeouts in steps of TIMEOUT_STEP rounded down, expiry in arrival order, O(1) removal.

These run on the real loop clock with the shortest timeouts the wheel has (0.1-0.3 s)."""

import asyncio

import pytest

from tornado_app.realtime.deadlines import GATHER_SECONDS, TIMEOUT_STEP, Deadlines


class Poll:
    def __init__(self, name: str):
        self.name = name
        self.deadline = None
        self.expiry_queue = None

    def __repr__(self):
        return self.name


class Expiries:
    """The calls of the wheel's `expire`, with the loop time of each."""

    def __init__(self):
        self.calls: list[list[Poll]] = []
        self.times: list[float] = []
        self.changed = asyncio.Event()

    def __call__(self, polls) -> None:
        self.calls.append(list(polls))
        self.times.append(asyncio.get_running_loop().time())
        self.changed.set()

    async def wait_for(self, count: int, timeout: float = 5.0) -> None:
        async def calls():
            while len(self.calls) < count:
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(calls(), timeout)


def now() -> float:
    return asyncio.get_running_loop().time()


@pytest.mark.gen_test
async def test_a_poll_expires_at_its_deadline_and_is_taken_out_of_its_queue():
    expiries = Expiries()
    wheel = Deadlines(expiries)
    poll = Poll("a")
    wheel.add(poll, 0.1)
    await expiries.wait_for(1)
    assert expiries.calls == [[poll]]
    assert expiries.times[0] >= poll.deadline - GATHER_SECONDS
    assert poll.expiry_queue is None


@pytest.mark.gen_test
async def test_a_timeout_is_rounded_down_to_a_step():
    """A poll is never held past what its client asked for."""
    wheel = Deadlines(lambda polls: None)
    for timeout, held in [(0.25, 0.2), (0.3, 0.3), (1.0, 1.0), (0.09, 0.0)]:
        poll = Poll(str(timeout))
        before = now()
        wheel.add(poll, timeout)
        after = now()
        assert before + held - 1e-6 <= poll.deadline <= after + held + 1e-6, timeout
    wheel.stop()


@pytest.mark.gen_test
async def test_polls_with_the_same_timeout_expire_together_in_arrival_order():
    expiries = Expiries()
    wheel = Deadlines(expiries)
    polls = [Poll(name) for name in "abcd"]
    for poll in polls:
        wheel.add(poll, 0.1)
    await expiries.wait_for(1)
    assert expiries.calls == [polls]


@pytest.mark.gen_test
async def test_a_shorter_timeout_added_later_expires_first():
    expiries = Expiries()
    wheel = Deadlines(expiries)
    long, short = Poll("long"), Poll("short")
    wheel.add(long, 3 * TIMEOUT_STEP)
    wheel.add(short, TIMEOUT_STEP)
    await expiries.wait_for(2)
    assert expiries.calls == [[short], [long]]
    assert expiries.times[1] >= long.deadline - GATHER_SECONDS


@pytest.mark.gen_test
async def test_a_discarded_poll_never_expires():
    expiries = Expiries()
    wheel = Deadlines(expiries)
    gone, stays = Poll("gone"), Poll("stays")
    wheel.add(gone, 0.1)
    wheel.add(stays, 0.1)
    wheel.discard(gone)
    assert gone.expiry_queue is None
    await expiries.wait_for(1)
    await asyncio.sleep(0.1)
    assert expiries.calls == [[stays]]


@pytest.mark.gen_test
async def test_discarding_twice_or_after_expiry_does_nothing():
    expiries = Expiries()
    wheel = Deadlines(expiries)
    poll = Poll("a")
    wheel.add(poll, 0.1)
    await expiries.wait_for(1)
    wheel.discard(poll)
    wheel.discard(poll)
    assert expiries.calls == [[poll]]


@pytest.mark.gen_test
async def test_a_poll_added_again_after_expiry_expires_again():
    expiries = Expiries()
    wheel = Deadlines(expiries)
    poll = Poll("a")
    wheel.add(poll, 0.1)
    await expiries.wait_for(1)
    wheel.add(poll, 0.1)
    await expiries.wait_for(2)
    assert expiries.calls == [[poll], [poll]]


@pytest.mark.gen_test
async def test_nothing_expires_after_stop():
    expiries = Expiries()
    wheel = Deadlines(expiries)
    wheel.add(Poll("a"), 0.1)
    wheel.stop()
    await asyncio.sleep(0.2)
    assert expiries.calls == []


@pytest.mark.gen_test
async def test_a_zero_timeout_expires_at_the_next_firing():
    expiries = Expiries()
    wheel = Deadlines(expiries)
    poll = Poll("a")
    wheel.add(poll, 0)
    await expiries.wait_for(1, timeout=1)
    assert expiries.calls == [[poll]]


@pytest.mark.gen_test
async def test_polls_with_a_timeout_under_one_step_parked_in_the_same_turn_all_expire():
    """Their deadline is now: uvloop's timer for it is a plain Handle (no when())."""
    expiries = Expiries()
    wheel = Deadlines(expiries)
    first, second, later = Poll("first"), Poll("second"), Poll("later")
    wheel.add(first, 0)
    wheel.add(second, 0.05)
    wheel.add(later, 0.1)
    await expiries.wait_for(2, timeout=1)
    assert expiries.calls == [[first, second], [later]]


@pytest.mark.gen_test
async def test_polls_of_many_timeouts_each_expire_once_in_deadline_order():
    expiries = Expiries()
    wheel = Deadlines(expiries)
    polls = {}
    for index, steps in enumerate([3, 1, 2, 1, 3, 2]):
        poll = Poll(f"{steps}-{index}")
        polls[poll] = steps
        wheel.add(poll, steps * TIMEOUT_STEP)
    while sum(map(len, expiries.calls)) < len(polls):
        await expiries.wait_for(len(expiries.calls) + 1)
    expired = [poll for call in expiries.calls for poll in call]
    assert sorted(expired, key=id) == sorted(polls, key=id)
    assert [polls[poll] for poll in expired] == sorted(polls.values())
    assert wheel._queues == {}
