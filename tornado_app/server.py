"""One server process: connect, build the app, listen, run background work, shut down cleanly."""

import asyncio
import logging

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from .app import make_app
from .context import AppContext, build_context
from .db import Database
from .settings import Settings

log = logging.getLogger(__name__)

# The server's own limit (MAX_BODY_BYTES) is enforced by the handlers while the body streams
# in, with a 413 in the contract's shape; Tornado's limit only has to stay out of its way.
TORNADO_MAX_BODY = 1 << 40
MAINTENANCE_INTERVAL = 60.0


class Server:
    def __init__(self, settings: Settings, mongodb_uri: str, jwt_secret: str,
                 is_ferretdb: bool | None = None):
        self.settings = settings
        self.mongodb_uri = mongodb_uri
        self.jwt_secret = jwt_secret
        self.is_ferretdb = is_ferretdb
        self.ctx: AppContext | None = None
        self.http: HTTPServer | None = None
        self.port: int | None = None
        self._tasks: list[asyncio.Task] = []

    async def start(self, sockets=None) -> int:
        settings = self.settings
        db = await Database.connect(self.mongodb_uri, settings.mongodb_db, settings.db_timeout,
                                    self.is_ferretdb)
        self.ctx = build_context(settings, db, self.jwt_secret)
        try:
            await db.ensure_indexes()
        except Exception as exc:  # the database may come up after us: keep trying
            log.warning("database not ready at start (%s); retrying in the background", exc)
            self._tasks.append(asyncio.create_task(self._ensure_indexes_until_done()))
        self.http = HTTPServer(make_app(self.ctx), max_body_size=TORNADO_MAX_BODY,
                               idle_connection_timeout=120, body_timeout=60)
        if sockets is None:
            sockets = bind_sockets(settings.port, settings.host)
        self.http.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]
        self._tasks.append(asyncio.create_task(self._maintenance()))
        log.info("listening on http://%s:%s", settings.host, self.port)
        return self.port

    async def _ensure_indexes_until_done(self) -> None:
        while True:
            await asyncio.sleep(2)
            try:
                await self.ctx.db.ensure_indexes()
                log.info("database ready, indexes in place")
                return
            except Exception as exc:
                log.warning("database still not ready: %s", exc)

    async def _maintenance(self) -> None:
        """Retention and expiry by the server itself: FerretDB has no TTL indexes."""
        while True:
            await asyncio.sleep(MAINTENANCE_INTERVAL)
            try:
                await self.ctx.events.purge()
                await self.ctx.auth.purge_expired()
            except Exception as exc:
                log.warning("maintenance pass failed: %s", exc)

    async def stop(self) -> None:
        if self.http is not None:
            self.http.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.http is not None:
            try:
                await asyncio.wait_for(self.http.close_all_connections(),
                                       self.settings.shutdown_timeout)
            except asyncio.TimeoutError:
                log.warning("connections still open after SHUTDOWN_TIMEOUT")
        if self.ctx is not None:
            await self.ctx.db.close()
