"""The route table and the application factory."""

from tornado import web

from handlers import auth, health, posts, products, users
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
]


def make_app(ctx: AppContext) -> web.Application:
    return web.Application(
        ROUTES, ctx=ctx, default_handler_class=NotFoundHandler,
        compress_response=False, xsrf_cookies=False, log_function=log_request)
