"""The OpenAPI document and the interactive documentation page, served from our own assets."""

from pathlib import Path

import openapi_ui_bundles.swagger_ui
from tornado import web

from tornado_app.web.asyncapi import build_asyncapi
from tornado_app.core.errors import ApiError
from tornado_app.runtime.logs import request_id_var
from tornado_app.web.openapi import build_openapi

from .base import BaseHandler, render_error, request_id_of

STATIC = Path(__file__).resolve().parent.parent / "tornado_app" / "static"
SWAGGER_UI = openapi_ui_bundles.swagger_ui.static_path

# Swagger UI styles elements inline and shows data: images; scripts only from us.
DOCS_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
            "form-action 'self'")


class OpenApiHandler(BaseHandler):
    route_name = "openapi"

    def get(self) -> None:
        document = self.application.settings.get("openapi_document")
        if document is None:
            # The route table comes from the app factory (tornado_app/web/app.py): importing it
            # here would be an import cycle, since the table imports this module.
            document = build_openapi(self.application.settings["routes"])
            self.application.settings["openapi_document"] = document
        self.send_json(document)


class AsyncApiHandler(BaseHandler):
    route_name = "asyncapi"

    def get(self) -> None:
        document = self.application.settings.get("asyncapi_document")
        if document is None:
            document = build_asyncapi()
            self.application.settings["asyncapi_document"] = document
        # The servers are where this document was fetched from.
        secure = self.request.protocol == "https"
        servers = {"websocket": {**document["servers"]["websocket"], "host": self.request.host,
                                 "protocol": "wss" if secure else "ws"},
                   "http": {**document["servers"]["http"], "host": self.request.host,
                            "protocol": "https" if secure else "http"}}
        self.send_json({**document, "servers": servers})


class RootHandler(BaseHandler):
    """`/` leads a person who opens the server in a browser to the documentation."""

    route_name = "root"

    def get(self) -> None:
        self.redirect("/docs", status=302)


class DocsHandler(BaseHandler):
    route_name = "docs"
    csp = DOCS_CSP

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish((STATIC / "docs.html").read_bytes())


class DocsInitHandler(BaseHandler):
    route_name = "docs"
    csp = DOCS_CSP

    def get(self) -> None:
        self.set_header("Content-Type", "application/javascript; charset=utf-8")
        self.finish((STATIC / "docs-init.js").read_bytes())


class DocsAssetHandler(web.StaticFileHandler):
    """Swagger UI's files from the installed package, with our security headers, and errors in
    the contract's shape like every other route's."""

    route_name = "docs"

    def set_default_headers(self) -> None:
        self.set_header("Content-Security-Policy", DOCS_CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("X-Request-ID", request_id_of(self.request))

    def prepare(self) -> None:
        request_id_var.set(request_id_of(self.request))

    @classmethod
    def get_absolute_path(cls, root: str, path: str) -> str:
        # A NUL (`%00`) or other control character names no file; the OS calls below would
        # raise on it.
        if any(ord(char) < 32 for char in path):
            raise web.HTTPError(404)
        return super().get_absolute_path(root, path)

    def write_error(self, status_code: int, **kwargs) -> None:
        self.set_header("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
        if status_code >= 500:
            render_error(self, ApiError(500, "internal_error", "internal server error"))
        else:
            render_error(self, ApiError(status_code, message="no such file"
                                        if status_code == 404 else None))
