"""When each waiting long-poll times out, with one loop timer for all of them.

A timer per poll costs a TimerHandle, its context and a heap slot each, and cancelling one
early (the usual end of a poll) leaves it in the loop's heap until its time. Polls that asked for
the same timeout expire in the order they arrived, so each timeout value keeps an
insertion-ordered dict of its polls (removal at any time is O(1)), and a single timer is set for
the earliest deadline of all. Timeouts are grouped in steps of TIMEOUT_STEP, rounded down (a poll
is never held past what its client asked for): the timeout is the client's choice, and each
distinct value would otherwise be one more queue for every firing of the timer to walk.
"""

import asyncio
import math

# Deadlines this close together are expired by the same firing of the timer.
GATHER_SECONDS = 0.005
TIMEOUT_STEP = 0.1


class Deadlines:
    def __init__(self, expire):
        self._expire = expire  # called with the list of polls whose time has come
        self._queues: dict[int, dict] = {}  # timeout in steps -> {poll: None}, oldest first
        self._timer: asyncio.Handle | None = None
        # When the timer fires. Kept here, not read from the handle: uvloop's call_at gives a
        # plain Handle, without when(), for a time less than 1 ms ahead (a timeout under one
        # step), and reading it then failed the next poll parked in the same turn.
        self._timer_at = 0.0

    def add(self, poll, timeout: float) -> None:
        """Sets `poll.deadline` and `poll.expiry_queue`."""
        loop = asyncio.get_running_loop()
        steps = math.floor(timeout / TIMEOUT_STEP + 1e-9)  # 1e-9: 0.3 / 0.1 is 2.9999999999999996
        queue = self._queues.get(steps)
        if queue is None:
            queue = self._queues[steps] = {}
        poll.deadline = deadline = loop.time() + steps * TIMEOUT_STEP
        poll.expiry_queue = queue
        queue[poll] = None
        if self._timer is None or deadline < self._timer_at:
            self._arm(loop, deadline)

    @staticmethod
    def discard(poll) -> None:
        # An emptied queue stays until the timer next fires; the timer itself is left alone.
        queue = poll.expiry_queue
        if queue is not None:
            queue.pop(poll, None)
            poll.expiry_queue = None

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, loop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(when, self._fire)
        self._timer_at = when

    def _fire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time() + GATHER_SECONDS
        expired, earliest = [], None
        for steps, queue in list(self._queues.items()):
            due = []
            # One pass per queue: each restart from the front would walk the removed entries.
            for poll in queue:
                if poll.deadline > now:
                    if earliest is None or poll.deadline < earliest:
                        earliest = poll.deadline
                    break
                due.append(poll)
            for poll in due:
                del queue[poll]
                poll.expiry_queue = None
            if not queue:
                del self._queues[steps]
            expired += due
        if earliest is not None:
            self._arm(loop, earliest)
        if expired:
            self._expire(expired)
