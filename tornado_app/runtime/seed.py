"""Demo data for a development database: two users, posts with comments, products in three
categories. Written through the stores, so every item has its event in the log as a real write
would. Every item has a fixed id (and the users fixed names): a second run finds them and adds
nothing.

The passwords are published here and printed: demo-only (the CLI refuses to seed with
APP_ENV=production).
"""

from bson import ObjectId

from ..storage.db import Database
from ..core.errors import ApiError
from ..realtime.log import EventLog
from ..storage.outbox import Outbox
from ..blog.posts import PostStore
from ..catalog.products import ProductStore
from ..schemas.posts import PostCreate
from ..schemas.products import ProductCreate
from ..schemas.users import RegisterRequest
from ..accounts.security import PasswordHasher
from ..accounts.users import UserStore

USERS = [
    # (id, username, email, password, role)
    ("5eed00000000000000000001", "demo-admin", "demo-admin@example.com", "demo-admin-password",
     "admin"),
    ("5eed00000000000000000002", "demo-user", "demo-user@example.com", "demo-user-password",
     "user"),
]

POSTS = [
    # (id, author, title, content, tags, [(comment id, author, body)])
    ("5eed00000000000000000101", "demo-admin", "Welcome to the demo",
     "This server pushes every change to subscribers: open /examples/live and add a comment.",
     ["intro", "demo"],
     [("5eed00000000000000000201", "demo-user", "Hello from the demo user!"),
      ("5eed00000000000000000202", "demo-admin", "Welcome aboard.")]),
    ("5eed00000000000000000102", "demo-user", "Three ways to listen",
     "WebSocket at /api/v1/ws, Server-Sent Events at /api/v1/stream, long-poll at /api/v1/poll.",
     ["realtime"],
     [("5eed00000000000000000203", "demo-admin", "And each resumes from its cursor.")]),
    ("5eed00000000000000000103", "demo-user", "Resuming without gaps",
     "Every GET answers with Event-Seq; subscribe with since=<that> and miss nothing.",
     ["realtime", "howto"],
     [("5eed00000000000000000204", "demo-user", "Epochs tell a restored backup apart."),
      ("5eed00000000000000000205", "demo-admin", "See docs/realtime.md.")]),
]

PRODUCTS = [
    # (id, sku, name, category, price_cents, stock)
    ("5eed00000000000000000301", "DEMO-KB-01", "Mechanical keyboard", "peripherals", 8900, 25),
    ("5eed00000000000000000302", "DEMO-MS-01", "Wireless mouse", "peripherals", 2900, 120),
    ("5eed00000000000000000303", "DEMO-MN-27", "27-inch monitor", "displays", 27900, 8),
    ("5eed00000000000000000304", "DEMO-MN-32", "32-inch 4K monitor", "displays", 44900, 3),
    ("5eed00000000000000000305", "DEMO-BK-PY", "Python in practice", "books", 3900, 40),
    ("5eed00000000000000000306", "DEMO-BK-TD", "Async networking", "books", 4500, 0),
]


async def seed(settings, uri: str, is_ferretdb) -> list[str]:
    """Seeds the database at `uri`; returns what to print (credentials, counts)."""
    db = await Database.connect(uri, settings.mongodb_db, settings.db_timeout, is_ferretdb)
    try:
        await db.ensure_indexes()
        events = EventLog(db, settings.event_retention, settings.db_timeout)
        await events.load_epoch()
        outbox = Outbox(db, events)
        users = UserStore(db)
        posts = PostStore(db, outbox, users)
        products = ProductStore(db, outbox)
        report = []
        counts = {"users": 0, "posts": 0, "comments": 0, "products": 0}
        by_name = {}
        hasher = PasswordHasher(settings.bcrypt_rounds)
        for oid, username, email, password, role in USERS:
            user = await users.find_by_username(username)
            if user is None:
                body = RegisterRequest(username=username, email=email, password=password)
                try:
                    user = await users.create(body.username, body.email,
                                              await hasher.hash(password), role=role,
                                              op_id=ObjectId(oid))
                    counts["users"] += 1
                except ApiError as exc:
                    report.append(f"skipped user {username}: {exc.message}")
                    continue
            by_name[username] = user
            report.append(f"{role:<5} {username} / {password}")
        for oid, author, title, content, tags, comments in POSTS:
            if author not in by_name:
                continue
            body = PostCreate(title=title, content=content, tags=tags)
            if not await _exists(posts.posts, oid):
                try:
                    await posts.create(by_name[author], body.title, body.content, body.tags,
                                       op_id=ObjectId(oid))
                    counts["posts"] += 1
                except ApiError as exc:
                    report.append(f"skipped post {title!r}: {exc.message}")
                    continue
            for comment_oid, commenter, text in comments:
                if commenter in by_name and not await _exists(posts.comments, comment_oid):
                    try:
                        await posts.add_comment(by_name[commenter], oid, text,
                                                op_id=ObjectId(comment_oid))
                        counts["comments"] += 1
                    except ApiError as exc:
                        report.append(f"skipped a comment on {title!r}: {exc.message}")
        for oid, sku, name, category, price, stock in PRODUCTS:
            if await _exists(products.products, oid):
                continue
            fields = ProductCreate(sku=sku, name=name, category=category, price_cents=price,
                                   stock=stock, description=f"Demo product ({category}).")
            try:
                await products.create(fields.model_dump(), op_id=ObjectId(oid))
                counts["products"] += 1
            except ApiError as exc:
                report.append(f"skipped product {sku}: {exc.message}")
        added = ", ".join(f"{n} {what}" for what, n in counts.items())
        return (["demo accounts (demo-only passwords):"] + ["  " + line for line in report]
                + [f"added {added} (a second run adds nothing)"])
    finally:
        await db.close()


async def _exists(collection, oid: str) -> bool:
    """Whether an earlier run made it (an event it left pending is stored by the server's
    recovery sweep)."""
    return await collection.find_one({"_id": ObjectId(oid)}, {"_id": 1}) is not None
