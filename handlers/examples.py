"""The live example page (`/examples/live`): the posts feed and one product's stock, kept current
by the JavaScript client (clients/js/realtime.js). Served in development only; every asset comes
from this server."""

from pathlib import Path

from tornado_app.core.errors import ApiError

from .base import BaseHandler

ROOT = Path(__file__).resolve().parent.parent
ASSETS = {
    "": (ROOT / "tornado_app" / "static" / "live.html", "text/html"),
    "/app.js": (ROOT / "tornado_app" / "static" / "live.js", "application/javascript"),
    "/realtime.js": (ROOT / "clients" / "js" / "realtime.js", "application/javascript"),
}

LIVE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; "
            "form-action 'none'")


class LivePageHandler(BaseHandler):
    route_name = "examples.live"
    csp = LIVE_CSP

    def get(self, asset: str) -> None:
        found = ASSETS.get(asset)
        if found is None or self.ctx.settings.app_env == "production" or not found[0].is_file():
            raise ApiError(404, "not_found", "no such route")
        path, media_type = found
        self.set_header("Content-Type", f"{media_type}; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.finish(path.read_bytes())
