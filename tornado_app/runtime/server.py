"""One server process: connect, build the app, listen, run background work, shut down cleanly."""

import asyncio
import logging
import time

from ..web.app import make_app
from ..web.context import AppContext, build_context
from ..storage.db import Database
from .embedded_supervisor import EmbeddedSupervisor
from .listen import listening_sockets
from ..web.httpserver import CappedHTTPServer
from ..realtime.fanout import RedisFanout
from .settings import Settings

log = logging.getLogger(__name__)

# The server's own limit (MAX_BODY_BYTES) is enforced by the handlers while the body streams
# in, with a 413 in the contract's shape; Tornado's limit only has to stay out of its way.
TORNADO_MAX_BODY = 1 << 40
MAINTENANCE_INTERVAL = 60.0
LOG_WATCH_INTERVAL = 2.0
HANG_MIN_SECONDS = 10.0
HANG_DB_TIMEOUTS = 5


class Server:
    def __init__(self, settings: Settings, mongodb_uri: str, jwt_secret: str,
                 is_ferretdb: bool | None = None, embedded=None):
        self.settings = settings
        # The embedded FerretDB this process started (cli.py), which it restarts if it dies.
        self.embedded = embedded
        self.mongodb_uri = mongodb_uri
        self.jwt_secret = jwt_secret
        self.is_ferretdb = is_ferretdb
        self.ctx: AppContext | None = None
        self.http: CappedHTTPServer | None = None
        self.fanout: RedisFanout | None = None
        self.port: int | None = None
        self._tasks: list[asyncio.Task] = []
        # Set at stop, besides cancelling the tasks: a cancel that lands just as a driver call
        # completes can be lost (as in the outbox), and a loop that only catches the driver's
        # error would then go on forever, and stop() with it.
        self._stopping = False

    async def start(self, sockets=None) -> int:
        settings = self.settings
        self._stopping = False
        # Several server processes (workers, or servers behind one load balancer) need
        # REDIS_URL for their events, so without it this process is the only one writing.
        db = await Database.connect(self.mongodb_uri, settings.mongodb_db, settings.db_timeout,
                                    self.is_ferretdb, read_cache=settings.read_cache,
                                    only_writer=not settings.redis_url)
        self.ctx = ctx = build_context(settings, db, self.jwt_secret)
        if self.embedded is not None:
            # A FerretDB silent for this long is taken for hung: every call to it has failed
            # with DB_TIMEOUT several times over by then.
            ctx.embedded = EmbeddedSupervisor(
                self.embedded, ping=lambda: db.ping(via_reads=True),
                hang_seconds=max(HANG_MIN_SECONDS, HANG_DB_TIMEOUTS * settings.db_timeout))
            self._tasks.append(asyncio.create_task(ctx.embedded.run()))
        try:
            await self._prepare_database()
        except Exception as exc:  # the database may come up after us: keep trying
            log.warning("database not ready at start (%s); retrying in the background", exc)
            self._tasks.append(asyncio.create_task(self._prepare_until_done()))
        if settings.redis_url:
            self.fanout = ctx.fanout = RedisFanout(settings.redis_url, ctx.hub)
            ctx.metrics.watch_fanout(self.fanout)
            ctx.events.add_listener(self.fanout.publish)
            self.fanout.start()
        ctx.connections.start()
        ctx.grants.start()
        ctx.metrics.start()
        self.http = CappedHTTPServer(
            make_app(ctx), max_body_size=TORNADO_MAX_BODY,
            idle_connection_timeout=settings.http_idle_timeout,
            body_timeout=settings.http_body_timeout,
            max_connections=settings.max_connections, open_websockets=ctx.connections.sockets,
            parked_polls=ctx.parked_polls)
        ctx.parked_polls.start(self.http)
        if sockets is None:
            sockets = listening_sockets(settings)
        self.http.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]
        self._tasks.append(asyncio.create_task(self._maintenance()))
        self._tasks.append(asyncio.create_task(self._watch_log()))
        log.info("listening on http://%s:%s", settings.host, self.port)
        return self.port

    async def _prepare_database(self) -> None:
        await self.ctx.db.ensure_indexes()
        await self.ctx.events.load_epoch()
        await self.ctx.hub.start()
        # Events left pending by a process that died are stored now, and every few seconds.
        self.ctx.outbox.start()
        # Anything still queued from before a stop is delivered now.
        self.ctx.notifications.start()

    async def _prepare_until_done(self) -> None:
        while not self._stopping:
            await asyncio.sleep(2)
            try:
                await self._prepare_database()
                log.info("database ready, indexes in place")
                return
            except Exception as exc:
                log.warning("database still not ready: %s", exc)

    async def _maintenance(self) -> None:
        """Retention and expiry by the server itself: FerretDB has no TTL indexes."""
        while not self._stopping:
            await asyncio.sleep(MAINTENANCE_INTERVAL)
            try:
                await self.purge_expired()
            except Exception as exc:
                log.warning("maintenance pass failed: %s", exc)

    async def _watch_log(self) -> None:
        """Notices a log replaced or rolled back under the running server (tornado_app/realtime/
        hub.py): subscribers are told at once instead of waiting in silence."""
        while not self._stopping:
            await asyncio.sleep(LOG_WATCH_INTERVAL)
            if not self.ctx.hub.started:
                continue
            try:
                await self.ctx.hub.watch_log()
            except Exception as exc:
                log.warning("could not check the event log's identity: %s", exc)

    async def purge_expired(self) -> None:
        await self.ctx.events.purge()
        self.ctx.hub.forget_before(await self.ctx.events.oldest_seq())
        await self.ctx.auth.purge_expired()
        await self.ctx.idempotency.purge_expired()

    async def stop(self) -> None:
        """Stop accepting, end long-lived connections, let requests finish, all within
        SHUTDOWN_TIMEOUT."""
        deadline = time.monotonic() + self.settings.shutdown_timeout
        if self.http is not None:
            self.http.stop()
        ctx = self.ctx
        if ctx is not None:
            await ctx.connections.shutdown(max(0.0, (deadline - time.monotonic()) / 2))
            ctx.parked_polls.stop()
            await ctx.grants.stop()
            while ctx.inflight and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # Bounded like the rest of the stop: a task still running is left behind, said.
            _, pending = await asyncio.wait(self._tasks,
                                            timeout=max(1.0, deadline - time.monotonic()))
            if pending:
                log.warning("%d background tasks did not end at stop", len(pending))
        if self.http is not None:
            try:
                await asyncio.wait_for(self.http.close_all_connections(),
                                       max(0.1, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                log.warning("connections still open after SHUTDOWN_TIMEOUT")
        if ctx is not None:
            await ctx.notifications.stop()
            await ctx.outbox.stop()
            if self.fanout is not None:
                await self.fanout.stop()
            ctx.metrics.stop()
            await ctx.db.close()
