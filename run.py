"""Starts the server, or runs an admin command.

    python run.py                      serve (embedded FerretDB unless MONGODB_URI is set)
    python run.py --workers 4          four processes on one port (needs REDIS_URL)
    python run.py create-admin --username NAME --email ADDR
"""

import argparse
import asyncio
import getpass
import logging
import os
import signal
import sys
import time

from pydantic import ValidationError
from tornado.ioloop import PeriodicCallback

from tornado_app.runtime import eventloop
from tornado_app.storage.db import Database
from tornado_app.runtime.embedded import EmbeddedDatabaseError, EmbeddedFerretDB
from tornado_app.runtime.embedded_supervisor import restart_blocking
from tornado_app.runtime.gcpauses import FreezeOnGrowth, GcPauses, tune_for_long_lived_objects
from tornado_app.runtime.logs import configure_logging
from tornado_app.accounts.security import PasswordHasher, resolve_jwt_secret
from tornado_app.runtime.settings import SettingsError, load_settings

log = logging.getLogger("run")


def fail(message: str, code: int = 2):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


class DatabaseEndpoint:
    """The configured MongoDB, or the embedded FerretDB started for the life of this command."""

    def __init__(self, settings):
        self.settings = settings
        self.embedded = None

    def __enter__(self):
        if self.settings.mongodb_uri:
            return self.settings.mongodb_uri, None
        try:
            self.embedded = EmbeddedFerretDB(self.settings.data_dir, self.settings.ferretdb_bin)
            return self.embedded.start(), True
        except EmbeddedDatabaseError as exc:
            fail(str(exc))

    def __exit__(self, *exc):
        if self.embedded is not None:
            self.embedded.stop()


async def serve(settings, uri: str, is_ferretdb, jwt_secret: str, sockets=None,
                embedded=None) -> None:
    from tornado_app.runtime.server import Server

    server = Server(settings, uri, jwt_secret, is_ferretdb, embedded)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await server.start(sockets)
    # Only a real server process tunes the collector (not tests running many servers).
    pauses = GcPauses()
    pauses.attach(server.ctx.metrics.gc_pauses)
    pauses.install()
    tune_for_long_lived_objects()
    freezer = FreezeOnGrowth()
    connections = server.ctx.connections
    freezing = PeriodicCallback(lambda: freezer.tick(connections.count()), 5000)
    freezing.start()
    await stopping.wait()
    freezing.stop()
    log.info("shutting down")
    await server.stop()


MULTIWORKER_FERRETDB_REFUSED = (
    "--workers {n} on FerretDB is refused: FerretDB applies an update as read-then-write, so "
    "concurrent updates of one document from several processes can all succeed (a stock of 100 "
    "sold 105 times). One process keeps its writes to one connection; several cannot. Use "
    "MongoDB for several workers (MONGODB_URI=mongodb://HOST:27017), or run one worker. For "
    "read-only load (benchmarks) ALLOW_UNSAFE_MULTIWORKER_FERRETDB=1 starts it anyway.")
# How long `--workers N` waits for a MONGODB_URI database to say whether it is FerretDB.
PROBE_SECONDS = 15.0


def probe_is_ferretdb(uri: str, timeout: float) -> bool:
    """Whether the database at `uri` is FerretDB, asked before any worker is forked (blocking,
    with a client that is closed again: nothing is inherited across fork())."""
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    deadline = time.monotonic() + max(PROBE_SECONDS, timeout)
    while True:
        try:
            with MongoClient(uri, serverSelectionTimeoutMS=int(timeout * 1000),
                             connectTimeoutMS=int(timeout * 1000)) as client:
                return "ferretdbVersion" in client.admin.command("buildInfo")
        except PyMongoError as exc:
            if time.monotonic() >= deadline:
                fail("--workers N > 1 must know whether the database is FerretDB (which is "
                     f"refused for several workers), and it did not answer: {exc}")
            log.warning("database not answering yet (%s); asking again", exc)
            time.sleep(1)


def check_workers_database(workers: int, settings, is_ferretdb) -> bool | None:
    """Refuses several workers on FerretDB unless the unsafe opt-in is set; what it learned
    about the database is passed on to the workers."""
    if workers < 2:
        return is_ferretdb
    if is_ferretdb is None:
        is_ferretdb = probe_is_ferretdb(settings.mongodb_uri, settings.db_timeout)
    if is_ferretdb:
        if not settings.allow_unsafe_multiworker_ferretdb:
            fail(MULTIWORKER_FERRETDB_REFUSED.format(n=workers))
        log.warning("%d workers on FerretDB (ALLOW_UNSAFE_MULTIWORKER_FERRETDB): concurrent "
                    "updates of one document from different workers can both succeed; for "
                    "read-only load only", workers)
    return is_ferretdb


def cmd_serve(args, settings) -> None:
    if args.workers < 1:
        fail("--workers must be at least 1")
    if args.workers > 1 and not settings.redis_url:
        fail("--workers N > 1 needs REDIS_URL: events must reach subscribers in every worker "
             "through Redis pub/sub (e.g. REDIS_URL=redis://127.0.0.1:6379/0)")
    if args.workers > 1 and settings.embedded_database:
        # Refused before the embedded database is started for nothing.
        check_workers_database(args.workers, settings, True)
    jwt_secret = resolve_jwt_secret(settings.jwt_secret, settings.data_dir)
    endpoint = DatabaseEndpoint(settings)
    with endpoint as (uri, is_ferretdb):
        embedded = endpoint.embedded
        if args.workers > 1:
            from tornado_app.runtime.workers import run_workers
            is_ferretdb = check_workers_database(args.workers, settings, is_ferretdb)

            def on_other_exit(pid, code, stopping):
                # The parent started the embedded database, so the parent restarts it.
                if embedded is not None and embedded.process.pid == pid:
                    restart_blocking(embedded, code, stopping)

            run_workers(args.workers, settings,
                        lambda sockets: serve(settings, uri, is_ferretdb, jwt_secret, sockets),
                        on_other_exit)
        else:
            asyncio.run(serve(settings, uri, is_ferretdb, jwt_secret, embedded=embedded))


async def create_admin(settings, uri, is_ferretdb, username, email, password) -> None:
    from tornado_app.schemas.users import RegisterRequest
    from tornado_app.accounts.users import UserStore

    try:
        body = RegisterRequest(username=username, email=email, password=password)
    except ValidationError as exc:
        fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    db = await Database.connect(uri, settings.mongodb_db, settings.db_timeout, is_ferretdb)
    try:
        await db.ensure_indexes()
        users = UserStore(db)
        if await users.find_by_username(body.username) or await users.find_by_login(body.email):
            fail(f"a user named {body.username!r} or with email {body.email!r} already exists", 1)
        password_hash = await PasswordHasher(settings.bcrypt_rounds).hash(body.password)
        user = await users.create(body.username, body.email, password_hash, role="admin")
        print(f"created admin {user['username']} ({user['_id']})")
    finally:
        await db.close()


def cmd_create_admin(args, settings) -> None:
    password = os.environ.get("ADMIN_PASSWORD")
    if not password:
        if not sys.stdin.isatty():
            fail("set ADMIN_PASSWORD, or run in a terminal to be prompted")
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            fail("the passwords do not match")
    with DatabaseEndpoint(settings) as (uri, is_ferretdb):
        asyncio.run(create_admin(settings, uri, is_ferretdb, args.username, args.email, password))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Tornado API server")
    parser.add_argument("--workers", type=int, default=1, help="processes on one port")
    sub = parser.add_subparsers(dest="command")
    admin = sub.add_parser("create-admin", help="create an admin user")
    admin.add_argument("--username", required=True)
    admin.add_argument("--email", required=True)
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        fail(str(exc))
    configure_logging(settings.log_level)
    eventloop.install()
    if args.command == "create-admin":
        cmd_create_admin(args, settings)
    else:
        cmd_serve(args, settings)


if __name__ == "__main__":
    main()
