"""Long-poll `/api/v1/poll`."""

from tornado_app.web.openapi import operation
from tornado_app.realtime.transports.parked_poll import POLL_MAX_EVENTS, poll_body
from tornado_app.schemas.notifications import PollQuery, PollResponse

from handlers.base import BaseHandler


class PollHandler(BaseHandler):
    """Long-poll: answers at once when there are events after `since`, else parks the poll
    (tornado_app/realtime/transports/parked_poll.py) until one arrives or the timeout."""

    route_name = "realtime.poll"

    def initialize(self, **kwargs) -> None:
        super().initialize(**kwargs)
        self.records = None  # events collected while the log is read; None once the client left
        self.cursor = 0
        self.channels = ()
        self.expired = False  # the log was replaced while it was read

    @operation(summary="Long-poll for events after a cursor", query=PollQuery,
               responses={200: PollResponse}, auth="optional", errors=(403, 410),
               tag="realtime")
    async def get(self) -> None:
        params = self.query()
        channels = await self.readable_channels(params.channels)
        hub = self.ctx.hub
        if params.since is not None:
            await hub.check_cursor(params.since, params.epoch)
        # Subscribed before the log is read, so nothing published meanwhile is missed.
        self.records = []
        self.channels = channels
        hub.subscribe(self, channels)
        up_to = hub.last_seq
        self.cursor = up_to if params.since is None else params.since
        try:
            if params.since is not None and params.since < up_to:
                replayed = await hub.replay(channels, params.since, up_to, POLL_MAX_EVENTS)
                if self.records is not None:
                    self.records[:0] = replayed  # live ones collected meanwhile are all newer
            records = self.records
        finally:  # also when the log cannot be read: the hub must not keep this handler
            self._unsubscribe()
        if self.expired:
            raise await hub.expired_error(
                "the event log was replaced: reload your state and poll again without since")
        if records is None or self.request.connection.stream.closed():
            return  # the client went away meanwhile
        records = records[:POLL_MAX_EVENTS]
        # A parked poll writes its answer itself, body and all: HEAD answers at once instead.
        if records or self.ctx.connections.shutting_down or self.request.method == "HEAD":
            self.finish(poll_body(records, records[-1].seq if records else self.cursor,
                                  hub.log.epoch))
        else:
            self.ctx.parked_polls.park(self, channels, self.cursor, params.timeout)

    def deliver(self, record) -> None:
        if self.records is not None and record.seq > self.cursor:
            self.records.append(record)

    def expire(self, epoch: str, oldest_seq: int) -> None:
        self.expired = True

    def _unsubscribe(self) -> None:
        if self.records is not None:
            self.records = None
            self.ctx.hub.unsubscribe(self, self.channels)

    def on_connection_close(self) -> None:
        super().on_connection_close()
        self._unsubscribe()
