"""Everything a handler needs, built once per process: settings, database and the services."""

from dataclasses import dataclass

from ..accounts.auth import AuthService
from ..storage.db import Database
from ..runtime.embedded_supervisor import EmbeddedSupervisor
from ..storage.idempotency import IdempotencyStore
from ..blog.posts import PostStore
from ..catalog.products import ProductStore
from ..runtime.metrics import Metrics
from ..notifications.store import NotificationService
from ..storage.outbox import Outbox
from ..realtime.connections import Connections
from ..realtime.fanout import RedisFanout
from ..realtime.grants import GrantCheck
from ..realtime.hub import Hub
from ..realtime.log import EventLog
from ..realtime.transports.parked_poll import PollParking
from ..accounts.security import PasswordHasher, TokenService
from ..runtime.settings import Settings
from ..accounts.users import UserStore


@dataclass
class AppContext:
    settings: Settings
    db: Database
    events: EventLog
    users: UserStore
    auth: AuthService
    posts: PostStore
    products: ProductStore
    notifications: NotificationService
    hub: Hub
    connections: Connections
    outbox: Outbox
    idempotency: IdempotencyStore
    # Requests being served right now, so shutdown can let them finish.
    inflight: int = 0
    metrics: "Metrics | None" = None
    parked_polls: PollParking | None = None
    # The Redis fan-out between workers, when REDIS_URL is set (its state is in /health/ready).
    fanout: "RedisFanout | None" = None
    # The supervisor of the embedded FerretDB this process runs, if it runs one (for /health).
    embedded: "EmbeddedSupervisor | None" = None
    grants: GrantCheck | None = None


def build_context(settings: Settings, db: Database, jwt_secret: str) -> AppContext:
    events = EventLog(db, settings.event_retention, settings.db_timeout)
    hub = Hub(events)
    events.add_listener(hub.on_event)
    users = UserStore(db)
    hasher = PasswordHasher(settings.bcrypt_rounds)
    tokens = TokenService(jwt_secret, settings.jwt_issuer, settings.jwt_audience,
                          settings.access_token_ttl, settings.refresh_token_ttl)
    auth = AuthService(db, users, hasher, tokens, settings.login_max_failures,
                       settings.login_window)
    outbox = Outbox(db, events)
    ctx = AppContext(settings=settings, db=db, events=events, users=users, auth=auth,
                     posts=PostStore(db, outbox, users), products=ProductStore(db, outbox),
                     notifications=NotificationService(db, outbox, users), hub=hub,
                     connections=Connections(settings.ws_ping_interval), outbox=outbox,
                     idempotency=IdempotencyStore(db, jwt_secret, settings.idempotency_lease))
    ctx.metrics = Metrics(ctx)
    ctx.parked_polls = PollParking(hub, ctx.connections, ctx.metrics)
    ctx.grants = GrantCheck(db, settings.auth_recheck_interval)
    ctx.parked_polls.grants = ctx.grants
    # Revocations and role changes made by this process reach its connections at once.
    auth.add_listener(ctx.grants.check_soon)
    users.add_listener(ctx.grants.check_soon)
    return ctx
