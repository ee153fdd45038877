"""The route table and the application factory."""

from tornado import web

from handlers import auth, health, notifications, poll, posts, products, sse, users, ws
from handlers.base import NotFoundHandler

from .context import AppContext
from .logs import log_request

API = "/api/v1"
ID = r"([^/]+)"

# The single source for routing (and, later, the OpenAPI document).
ROUTES = [
    (r"/health", health.HealthHandler),
    (r"/health/ready", health.ReadyHandler),
    (API + r"/auth/register", auth.RegisterHandler),
    (API + r"/auth/login", auth.LoginHandler),
    (API + r"/auth/token", auth.TokenHandler),
    (API + r"/auth/refresh", auth.RefreshHandler),
    (API + r"/auth/logout", auth.LogoutHandler),
    (API + r"/users/me", users.MeHandler),
    (API + r"/users", users.UsersHandler),
    (API + r"/users/" + ID, users.UserHandler),
    (API + r"/posts", posts.PostsHandler),
    (API + r"/posts/" + ID, posts.PostHandler),
    (API + r"/posts/" + ID + r"/comments", posts.CommentsHandler),
    (API + r"/comments/" + ID, posts.CommentHandler),
    (API + r"/products", products.ProductsHandler),
    (API + r"/products/" + ID, products.ProductHandler),
    (API + r"/products/" + ID + r"/stock", products.StockHandler),
    (API + r"/notifications", notifications.NotificationsHandler),
    (API + r"/notifications/" + ID, notifications.NotificationHandler),
    (API + r"/notifications/" + ID + r"/read", notifications.NotificationReadHandler),
    (API + r"/ws", ws.EventsSocket),
    (API + r"/poll", poll.PollHandler),
    (API + r"/stream", sse.StreamHandler),
]


def make_app(ctx: AppContext) -> web.Application:
    settings = ctx.settings
    return web.Application(
        ROUTES, ctx=ctx, default_handler_class=NotFoundHandler,
        compress_response=False, xsrf_cookies=False, log_function=log_request,
        # Pings come from one shared timer (realtime.connections), not one per connection.
        websocket_ping_interval=0,
        websocket_max_message_size=settings.ws_max_message_bytes)
