"""One connection's subscriptions (WebSocket or SSE): its channels, cursor and replay seam.

While a replay from the log runs, live events for the connection are queued; once the replay
has sent everything up to the hub's position at subscribe time, the queue (all newer) follows.
The cursor drops anything already sent, so the seam has no gap and no duplicate.
"""

REPLAY_PAGE = 1000


def _nowhere(record) -> None:
    pass


class Subscription:
    __slots__ = ("hub", "sink", "channels", "cursor", "queue", "on_expired")

    def __init__(self, hub, sink, on_expired=None):
        self.hub = hub
        self.sink = sink  # sink(record): writes the record's prebuilt bytes to the client
        # on_expired(epoch, oldest_seq): the log was replaced; every channel is dropped.
        self.on_expired = on_expired
        self.channels: set[str] = set()
        self.cursor = 0
        self.queue: list | None = None

    def expire(self, epoch: str, oldest_seq: int) -> None:
        """Called by the hub when the log was replaced: the cursor means nothing any more."""
        self.channels = set()
        self.queue = None
        self.cursor = 0  # the new log's seqs may be lower: subscribing again starts afresh
        if self.on_expired is not None:
            self.on_expired(epoch, oldest_seq)

    def deliver(self, record) -> None:
        if self.queue is not None:
            self.queue.append(record)
        elif record.seq > self.cursor and record.channel in self.channels:
            # The channel check: a fan-out spread over several turns of the loop still holds
            # a subscriber that has left the channel meanwhile (its right to read it ended).
            self.cursor = record.seq
            self.sink(record)

    def add_live(self, channels: list[str]) -> None:
        """Subscribes from now on (no replay)."""
        new = [name for name in channels if name not in self.channels]
        self.channels.update(new)
        self.hub.subscribe(self, new)
        self.cursor = max(self.cursor, self.hub.last_seq)

    async def add(self, channels: list[str], since: int | None, on_subscribed=None,
                  epoch: str | None = None) -> None:
        """Subscribes; `on_subscribed()` runs once the cursor is known good, before any event."""
        hub = self.hub
        if since is not None:
            await hub.check_cursor(since, epoch)
        if on_subscribed is not None:
            on_subscribed()
        if since is None:
            self.add_live(channels)
            return
        new = [name for name in channels if name not in self.channels]
        self.channels.update(new)
        self.queue = []
        hub.subscribe(self, new)
        up_to = hub.last_seq
        try:
            after = since
            while True:
                page = await hub.replay(channels, after, up_to, limit=REPLAY_PAGE)
                for record in page:
                    if self.queue is None:
                        return  # closed during the replay
                    if record.channel in self.channels:  # not left during the replay
                        self.sink(record)
                if len(page) < REPLAY_PAGE:
                    break
                after = page[-1].seq
            self.cursor = max(self.cursor, since, up_to)
        except BaseException:
            self.remove(new)
            raise
        finally:
            queued, self.queue = self.queue, None
            for record in queued or ():
                self.deliver(record)

    def remove(self, channels) -> None:
        present = [name for name in channels if name in self.channels]
        self.channels.difference_update(present)
        self.hub.unsubscribe(self, present)

    def close(self) -> None:
        self.hub.unsubscribe(self, self.channels)
        self.channels = set()
        self.queue = None
        # The sink is a method of the connection that holds this subscription: dropping it ends
        # that reference cycle, so a closed connection is freed at once rather than by the
        # collector (which never sees frozen objects; tornado_app/gcpauses.py). A fan-out that
        # still holds this subscription delivers to nothing.
        self.sink = _nowhere
