"""The route table: the single source for routing and for the OpenAPI document."""

from handlers import auth, docs, examples, health, notifications, posts, products, users

from ..realtime.transports import longpoll as poll, sse, websocket as ws

API = "/api/v1"
ID = r"(?P<{}>[^/]+)"

ROUTES = [
    (r"/", docs.RootHandler),
    (r"/health", health.HealthHandler),
    (r"/health/ready", health.ReadyHandler),
    (r"/metrics", health.MetricsHandler),
    (API + r"/auth/register", auth.RegisterHandler),
    (API + r"/auth/login", auth.LoginHandler),
    (API + r"/auth/token", auth.TokenHandler),
    (API + r"/auth/refresh", auth.RefreshHandler),
    (API + r"/auth/logout", auth.LogoutHandler),
    (API + r"/users/me", users.MeHandler),
    (API + r"/users", users.UsersHandler),
    (API + r"/users/" + ID.format("user_id"), users.UserHandler),
    (API + r"/posts", posts.PostsHandler),
    (API + r"/posts/" + ID.format("post_id"), posts.PostHandler),
    (API + r"/posts/" + ID.format("post_id") + r"/comments", posts.CommentsHandler),
    (API + r"/comments/" + ID.format("comment_id"), posts.CommentHandler),
    (API + r"/products", products.ProductsHandler),
    (API + r"/products/" + ID.format("product_id"), products.ProductHandler),
    (API + r"/products/" + ID.format("product_id") + r"/stock", products.StockHandler),
    (API + r"/notifications", notifications.NotificationsHandler),
    (API + r"/notifications/" + ID.format("notification_id"), notifications.NotificationHandler),
    (API + r"/notifications/" + ID.format("notification_id") + r"/read",
     notifications.NotificationReadHandler),
    (API + r"/ws", ws.EventsSocket),
    (API + r"/poll", poll.PollHandler),
    (API + r"/stream", sse.StreamHandler),
    (r"/openapi.json", docs.OpenApiHandler),
    (r"/asyncapi.json", docs.AsyncApiHandler),
    (r"/docs", docs.DocsHandler),
    (r"/docs/init.js", docs.DocsInitHandler),
    (r"/docs/static/(.*)", docs.DocsAssetHandler, {"path": str(docs.SWAGGER_UI)}),
    (r"/examples/live(|/app\.js|/realtime\.js)", examples.LivePageHandler),
]
