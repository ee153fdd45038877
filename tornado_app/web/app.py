"""The application factory."""

import functools

from tornado import web

from handlers.base import NotFoundHandler

from ..runtime.logs import log_request
from .context import AppContext
from .routes import ROUTES


def make_app(ctx: AppContext) -> web.Application:
    # `routes` is read by the OpenAPI handler (handlers/docs.py), which therefore needs no import
    # of this module or of the route table (that import would be a cycle: the table imports it).
    return web.Application(
        ROUTES, ctx=ctx, routes=ROUTES, default_handler_class=NotFoundHandler,
        compress_response=False, xsrf_cookies=False,
        log_function=functools.partial(log_request, ctx.metrics))
