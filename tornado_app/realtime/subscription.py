"""One connection's subscriptions (WebSocket, SSE or long-poll): its channels, their cursors, and
the one replay-then-live handover every transport uses (`Subscription.add`).

While a replay from the log runs, live events for the connection are queued; once the replay
has sent everything up to the hub's position at subscribe time, the queue (all newer) follows.
Each channel's cursor drops anything already sent on it, so the seam has no gap and no
duplicate.

Records go to the sink in lists (a fan-out turn's events, a replay page), which the connection
writes in one send.
"""

from collections.abc import Callable, Sequence

from .hub import Hub
from .record import Record

REPLAY_PAGE = 1000

Sink = Callable[[Sequence[Record]], None]  # writes records' prebuilt bytes, in one send
OnExpired = Callable[[str, int], None]  # (epoch, oldest_seq): the log was replaced


def _nowhere(records: Sequence[Record]) -> None:
    pass


class Subscription:
    __slots__ = ("hub", "sink", "channels", "queue", "on_expired")

    def __init__(self, hub: Hub, sink: Sink, on_expired: OnExpired | None = None):
        self.hub = hub
        self.sink = sink  # sink(records): writes the records' prebuilt bytes, in one send
        # on_expired(epoch, oldest_seq): the log was replaced; every channel is dropped.
        self.on_expired = on_expired
        # Channel → its cursor: the seq up to which that channel's events are sent (or were
        # skipped at the client's request). One per channel, never one per connection: a
        # `since` given for one channel (even one ahead of this process's hub, as when another
        # worker's events have not reached it yet) must not hold back another channel.
        self.channels: dict[str, int] = {}
        self.queue: list | None = None

    def expire(self, epoch: str, oldest_seq: int) -> None:
        """Called by the hub when the log was replaced: the cursors mean nothing any more."""
        self.channels = {}
        self.queue = None
        if self.on_expired is not None:
            self.on_expired(epoch, oldest_seq)

    def deliver(self, records: Sequence[Record]) -> None:
        """Records in seq order, from the hub."""
        if self.queue is not None:
            self.queue.extend(records)
            return
        channels = self.channels
        if len(records) == 1:  # the usual case, kept as cheap as one record can be
            record = records[0]
            cursor = channels.get(record.channel)
            if cursor is not None and record.seq > cursor:  # None: unsubscribed meanwhile
                channels[record.channel] = record.seq
                self.sink(records)
            return
        fresh = []
        for record in records:
            cursor = channels.get(record.channel)
            if cursor is not None and record.seq > cursor:  # None: unsubscribed meanwhile
                channels[record.channel] = record.seq
                fresh.append(record)
        if fresh:
            self.sink(fresh)

    def add_live(self, channels: list[str]) -> int:
        """Subscribes from now on (no replay); returns the hub's position."""
        new = [name for name in channels if name not in self.channels]
        last_seq = self.hub.last_seq
        for name in new:
            self.channels[name] = last_seq
        self.hub.subscribe(self, new)
        return last_seq

    async def add(self, channels: list[str], since: int | None, on_subscribed=None,
                  epoch: str | None = None, limit: int | None = None) -> int:
        """Subscribes; `on_subscribed()` runs once the cursor is known good, before any event.

        With `since`, the events after it are replayed from the log, then live ones follow: the
        handover. `limit` is for a consumer that takes no more than that many events (a
        long-poll's answer): the replay reads no more, and a replay that reaches it ends the
        subscription. Returns the hub's position when live delivery began (the seam).
        """
        hub = self.hub
        if since is not None:
            await hub.check_cursor(since, epoch)
        if on_subscribed is not None:
            on_subscribed()
        if since is None:
            return self.add_live(channels)
        new = [name for name in channels if name not in self.channels]
        # No `await` from here to `up_to = ...`: the hub must not dispatch an event between the
        # subscription and the reading of its position, or that event would be neither queued
        # (not yet subscribed) nor replayed (past `up_to`). Everything at or below `up_to` comes
        # from the replay; everything above it reaches the queue.
        self.queue = []  # live events wait here (any channel's) until the replay is sent
        for name in new:
            self.channels[name] = since
        hub.subscribe(self, new)
        up_to = hub.last_seq
        try:
            after, sent = since, 0
            while True:
                page_size = REPLAY_PAGE if limit is None else min(REPLAY_PAGE, limit - sent)
                page = await hub.replay(channels, after, up_to, limit=page_size)
                if self.queue is None:
                    return up_to  # closed during the replay
                if page:
                    self.sink(page)  # a page in one send
                sent += len(page)
                if limit is not None and sent >= limit:
                    self.close()  # the consumer is full: nothing more goes to it
                    return up_to
                if len(page) < page_size:
                    break
                after = page[-1].seq
            for name in channels:
                if name in self.channels:  # not left meanwhile (its right to read it ended)
                    self.channels[name] = max(self.channels[name], since, up_to)
        except BaseException:
            self.remove(new)
            raise
        finally:
            queued, self.queue = self.queue, None
            if queued:
                self.deliver(queued)  # dropped by the cursors if already replayed
        return up_to

    def add_recent(self, channels: list[str], since: int, on_subscribed=None,
                   epoch: str | None = None) -> int | None:
        """`add` with `since` when the hub's memory holds every event after it (a client back
        after a blip), done at once: no await, so no task, no queue for live events (none can
        arrive meanwhile), and the ack and the replay leave together. Returns the seam as `add`
        does, or None, having done nothing, when `add` is needed (the database, an error).

        In a reconnect storm of 15,000 resuming WebSockets the task, its callbacks and the
        reader removed and added again around it were ~4% of the server's samples (py-spy).
        """
        hub = self.hub
        if not hub.in_memory(since, epoch):
            return None
        if on_subscribed is not None:
            on_subscribed()
        new = [name for name in channels if name not in self.channels]
        for name in new:
            self.channels[name] = since
        hub.subscribe(self, new)
        up_to = hub.last_seq
        after = since
        while True:
            page = hub.replay_recent(channels, after, up_to, REPLAY_PAGE)
            if page:
                self.sink(page)  # a page in one send
            if self.sink is _nowhere:
                return up_to  # closed by that send (a slow consumer)
            if len(page) < REPLAY_PAGE:
                break
            after = page[-1].seq
        for name in channels:
            if name in self.channels:
                self.channels[name] = max(self.channels[name], since, up_to)
        return up_to

    def retarget(self, sink: Sink, on_expired: OnExpired | None = None) -> None:
        """Hands the live events to another consumer (a long-poll that leaves Tornado to wait),
        with no moment without a subscription: nothing published meanwhile can be missed."""
        self.sink = sink
        self.on_expired = on_expired

    def remove(self, channels) -> None:
        present = [name for name in channels if name in self.channels]
        for name in present:
            del self.channels[name]
        self.hub.unsubscribe(self, present)

    def close(self) -> None:
        self.hub.unsubscribe(self, self.channels)
        self.channels = {}
        self.queue = None
        # The sink is a method of the connection that holds this subscription: dropping it ends
        # that reference cycle, so a closed connection is freed at once rather than by the
        # collector (which never sees frozen objects; tornado_app/runtime/gcpauses.py). A fan-out that
        # still holds this subscription delivers to nothing.
        self.sink = _nowhere
