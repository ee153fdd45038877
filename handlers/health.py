"""Liveness and readiness."""

from .base import BaseHandler


class HealthHandler(BaseHandler):
    route_name = "health"

    def get(self) -> None:
        self.send_json({"status": "ok"})


class ReadyHandler(BaseHandler):
    route_name = "ready"

    async def get(self) -> None:
        db = self.ctx.db
        if db.indexes_ready and await db.ping():
            self.send_json({"status": "ready"})
        else:
            self.set_header("Retry-After", "5")
            self.send_json({"status": "unavailable",
                            "database": "unreachable" if db.indexes_ready else "not initialized"},
                           status=503)
