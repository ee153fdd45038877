"""Liveness and readiness."""

from prometheus_client import CONTENT_TYPE_LATEST

from tornado_app.core.errors import service_unavailable
from tornado_app.web.openapi import operation
from tornado_app.schemas.common import HealthStatus

from .base import BaseHandler


class HealthHandler(BaseHandler):
    route_name = "health"

    @operation(summary="Liveness: 200 while the process runs and can recover; 503 once it "
               "cannot restart its own embedded database", responses={200: HealthStatus},
               tag="operations")
    def get(self) -> None:
        embedded = self.ctx.embedded
        if embedded is not None and not embedded.recoverable:
            # A database that is merely down is not the process's fault (readiness says it);
            # one it owns and cannot bring back is: restarting the process is the way out.
            raise service_unavailable(
                f"the embedded database could not be restarted ({embedded.failures} attempts "
                f"in a row failed): {embedded.last_error}")
        self.send_json({"status": "ok"})


class ReadyHandler(BaseHandler):
    route_name = "ready"

    @operation(summary="Readiness: the database answers and indexes exist; `redis` (with "
               "REDIS_URL) says whether events from other workers arrive through Redis or, "
               "while it does not answer, are read from the log", responses={200: HealthStatus},
               tag="operations")
    async def get(self) -> None:
        db = self.ctx.db
        fanout = self.ctx.fanout
        # Redis is not needed to serve: without it events are read from the log, a little later.
        redis = [{"loc": ["redis"], "msg": fanout.state()}] if fanout is not None else []
        if not (db.indexes_ready and await db.ping()):
            error = service_unavailable("the database is unreachable" if db.indexes_ready
                                        else "the database is not initialized yet")
            embedded = self.ctx.embedded
            state = embedded.state() if embedded is not None else None
            error.details = [{"loc": ["database"], "msg": state or error.message}] + redis
            raise error
        body = {"status": "ready", "database": "ok"}
        if fanout is not None:
            body["redis"] = fanout.state()
        self.send_json(body)


class MetricsHandler(BaseHandler):
    route_name = "metrics"

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(self.ctx.metrics.exposition())
