"""Long-poll `/api/v1/poll`."""

import asyncio

from tornado_app.openapi import operation
from tornado_app.schemas.notifications import PollQuery, PollResponse

from .base import BaseHandler

POLL_MAX_EVENTS = 100


class PollHandler(BaseHandler):
    """Long-poll: answers at once when there are events after `since`, else waits for one."""

    route_name = "realtime.poll"

    def initialize(self, **kwargs) -> None:
        super().initialize(**kwargs)
        self.records = None  # events for this answer; None once answered or gone
        self.cursor = 0
        self.channels = ()
        self._ready = False
        self._timer = None
        self._waiting = None

    @operation(summary="Long-poll for events after a cursor", query=PollQuery,
               responses={200: PollResponse}, auth="optional", errors=(403, 410),
               tag="realtime")
    async def get(self) -> None:
        params = self.query()
        channels = await self.readable_channels(params.channels)
        hub = self.ctx.hub
        if params.since is not None:
            await hub.check_cursor(params.since)
        # Registered before the log is read, so nothing published meanwhile is missed.
        loop = asyncio.get_running_loop()
        self._waiting = loop.create_future()
        self.records = []
        self.channels = channels
        hub.subscribe(self, channels)
        self.ctx.connections.polls.add(self)
        up_to = hub.last_seq
        self.cursor = up_to if params.since is None else params.since
        if params.since is not None and params.since < up_to:
            replayed = await hub.replay(channels, params.since, up_to, POLL_MAX_EVENTS)
            if self.records is None:
                return  # the client went away meanwhile
            self.records[:0] = replayed  # live ones collected meanwhile are all newer
        self._ready = True
        if self.records or self.ctx.connections.shutting_down:
            self.answer()
        else:
            self._timer = loop.call_later(params.timeout, self.answer)
        await self._waiting

    def deliver(self, record) -> None:
        if self.records is None or record.seq <= self.cursor:
            return
        self.records.append(record)
        if not self._ready:
            return
        if len(self.records) >= POLL_MAX_EVENTS:
            self.answer()
        elif len(self.records) == 1:
            # Answer on the next turn of the loop, so events published together go together.
            asyncio.get_running_loop().call_soon(self.answer)

    def answer(self) -> None:
        """Answers with what this poll has (also at the timeout and at shutdown)."""
        if self.records is None:
            return
        records = self.records[:POLL_MAX_EVENTS]
        cursor = records[-1].seq if records else self.cursor
        self._release()
        if not self._finished and not self.request.connection.stream.closed():
            self.set_status(200)
            self.finish(b'{"events":[' + b",".join(r.json for r in records)
                        + b'],"cursor":%d}' % cursor)

    def _release(self) -> None:
        self.records = None
        self.ctx.hub.unsubscribe(self, self.channels)
        self.ctx.connections.polls.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._waiting is not None and not self._waiting.done():
            self._waiting.set_result(None)

    def on_connection_close(self) -> None:
        super().on_connection_close()
        if self.records is not None:
            self._release()
