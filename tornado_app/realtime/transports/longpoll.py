"""Long-poll `/api/v1/poll`: the request, the handover from the log to live events, and the
answer, at once or from a parked poll (tornado_app/realtime/transports/parked_poll.py)."""

import time

from handlers.base import BaseHandler
from tornado_app.schemas.notifications import PollQuery, PollResponse
from tornado_app.web.detached_http import response_head, take_socket
from tornado_app.web.openapi import operation

from ..subscription import Subscription
from .parked_poll import POLL_MAX_EVENTS, TakenRequest, poll_body


class PollHandler(BaseHandler):
    """Long-poll: answers at once when there are events after `since`, else parks the poll
    until one arrives or the timeout."""

    route_name = "realtime.poll"

    def initialize(self, **kwargs) -> None:
        super().initialize(**kwargs)
        self.subscription = None
        self.expired = False  # the log was replaced while it was read

    @operation(summary="Long-poll for events after a cursor", query=PollQuery,
               responses={200: PollResponse}, auth="optional", errors=(403, 410),
               tag="realtime")
    async def get(self) -> None:
        params = self.query()
        channels = await self.readable_channels(params.channels)
        hub = self.ctx.hub
        records = []  # what the answer carries: the replay, then live events, in seq order

        def collect(new) -> None:
            # Past the limit the client asks again from the cursor.
            records.extend(new[:POLL_MAX_EVENTS - len(records)])

        self.subscription = subscription = Subscription(hub, collect, self._log_replaced)
        try:
            up_to = await subscription.add(channels, params.since, epoch=params.epoch,
                                           limit=POLL_MAX_EVENTS)
        except BaseException:  # also when the log cannot be read: the hub must not keep it
            subscription.close()
            raise
        cursor = up_to if params.since is None else params.since
        if self.expired:
            subscription.close()
            raise await hub.expired_error(
                "the event log was replaced: reload your state and poll again without since")
        if self.request.connection.stream.closed():
            subscription.close()
            return  # the client went away meanwhile
        # A parked poll writes its answer itself, body and all: HEAD answers at once instead.
        if records or self.ctx.connections.shutting_down or self.request.method == "HEAD":
            subscription.close()
            self.finish(poll_body(records, records[-1].seq if records else cursor,
                                  hub.log.epoch))
        else:
            # The subscription goes on in the parked poll: live events keep arriving throughout.
            self.subscription = None
            self.ctx.parked_polls.park(self._leave_tornado(), subscription, records, cursor,
                                       params.timeout)

    def _leave_tornado(self) -> TakenRequest:
        """The connection, out of Tornado, with what the parked poll needs to answer on it."""
        head, head_end, keep_alive = response_head(self)
        started = time.time() - self.request.request_time()
        request_id, user, family, expires = (self.request_id, self.user, self.token_family,
                                             self.token_expires)
        sock, unread = take_socket(self)  # Tornado is done with the request from here on
        return TakenRequest(sock, unread, head, head_end, keep_alive, started, request_id, user,
                            family, expires)

    def _log_replaced(self, epoch: str, oldest_seq: int) -> None:
        self.expired = True

    def on_connection_close(self) -> None:
        super().on_connection_close()
        if self.subscription is not None:
            self.subscription.close()
