"""The long-lived connections of this process, for shutdown, keep-alives and metrics."""

import asyncio

from tornado.ioloop import PeriodicCallback

SSE_KEEPALIVE_SECONDS = 15.0
HEARTBEAT_STEPS = 20


class Connections:
    def __init__(self, ws_ping_interval: float = 20.0):
        self.ws_ping_interval = ws_ping_interval
        self.sockets = set()   # WebSocket sessions (realtime.session)
        self.polls = set()     # long-polls waiting for events (realtime.transports.parked_poll)
        self.streams = set()   # SSE handlers
        self.slow_consumers_closed = 0
        self.shutting_down = False
        self._keepalive: PeriodicCallback | None = None
        self._heartbeat: PeriodicCallback | None = None
        self._round: list = []  # sockets still to ping in this heartbeat round
        self._per_tick = 0
        self._tick = 0  # ticks into the current heartbeat round

    def count(self) -> int:
        return len(self.sockets) + len(self.polls) + len(self.streams)

    def start(self) -> None:
        # One timer for every SSE stream, not one per connection.
        self._keepalive = PeriodicCallback(self._sse_keepalive, SSE_KEEPALIVE_SECONDS * 1000)
        self._keepalive.start()
        # One timer pings every WebSocket, each once per WS_PING_INTERVAL. A round takes
        # HEARTBEAT_STEPS ticks whatever the number of sockets (a share of them per tick, so
        # 19,000 pings and their pongs do not all land in one turn of the loop); with a single
        # socket the other ticks simply have nothing to do.
        self._heartbeat = PeriodicCallback(self._ws_heartbeat,
                                           self.ws_ping_interval * 1000 / HEARTBEAT_STEPS)
        self._heartbeat.start()

    def _ws_heartbeat(self) -> None:
        if self._tick == 0:
            self._round = list(self.sockets)
            self._per_tick = -(-len(self._round) // HEARTBEAT_STEPS)
        self._tick = (self._tick + 1) % HEARTBEAT_STEPS
        if not self._round:
            return
        batch = self._round[-self._per_tick:]
        del self._round[-self._per_tick:]
        now = asyncio.get_running_loop().time()
        for socket in batch:
            socket.heartbeat(now, self.ws_ping_interval)

    def _sse_keepalive(self) -> None:
        for stream in tuple(self.streams):
            stream.keepalive()

    async def shutdown(self, timeout: float) -> None:
        """WebSockets close with 1001, long-polls answer with what they have, SSE streams end."""
        self.shutting_down = True
        for timer in (self._keepalive, self._heartbeat):
            if timer is not None:
                timer.stop()
        for poll in tuple(self.polls):
            poll.answer()
        for stream in tuple(self.streams):
            stream.end()
        for socket in tuple(self.sockets):
            socket.close(1001, "server shutting down")
        deadline = asyncio.get_running_loop().time() + timeout
        while (self.sockets or self.polls or self.streams) and \
                asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
