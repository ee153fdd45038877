"""The command line: `tornado-app`, `python -m tornado_app` and `python run.py` are this one CLI.

    tornado-app [serve] [--workers N] [--dev]   serve (embedded FerretDB unless MONGODB_URI is set)
    tornado-app create-admin --username NAME --email ADDR
    tornado-app seed                            demo users, posts with comments, products
"""

import argparse
import asyncio
import fcntl
import getpass
import logging
import os
import re
import signal
import sys
import time
from pathlib import Path

from pydantic import ValidationError
from tornado.ioloop import PeriodicCallback

from .runtime import eventloop
from .storage.db import Database
from .runtime.embedded import EmbeddedDatabaseError, EmbeddedFerretDB
from .runtime.embedded_supervisor import restart_blocking
from .runtime.gcpauses import FreezeOnGrowth, GcPauses, tune_for_long_lived_objects
from .runtime.logs import configure_logging
from .accounts.security import PasswordHasher, resolve_jwt_secret
from .runtime.settings import SettingsError, load_settings

log = logging.getLogger("tornado_app.cli")

PROG = "tornado-app"


def fail(message: str, code: int = 2):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def running_embedded_uri(data_dir) -> str | None:
    """The address of the embedded FerretDB that a running server holds on `data_dir`, if one
    does: its lock file (tornado_app/runtime/embedded.py) is locked and names the port."""
    path = Path(data_dir).resolve() / "ferretdb" / "ferretdb.lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        found = re.search(r"\bport (\d+)", path.read_text(errors="replace"))
        return f"mongodb://127.0.0.1:{found.group(1)}/" if found else None
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class DatabaseEndpoint:
    """The configured MongoDB, or the embedded FerretDB started for the life of this command.
    With `share`, an admin command uses the embedded FerretDB of a server running on the same
    DATA_DIR (two FerretDBs may not share one data directory)."""

    def __init__(self, settings, share: bool = False):
        self.settings = settings
        self.share = share
        self.embedded = None

    def __enter__(self):
        if self.settings.mongodb_uri:
            return self.settings.mongodb_uri, None
        running = self.share and running_embedded_uri(self.settings.data_dir)
        if running:
            log.info("using the embedded FerretDB of the server running on this DATA_DIR (%s)",
                     running)
            return running, True
        try:
            self.embedded = EmbeddedFerretDB(self.settings.data_dir, self.settings.ferretdb_bin)
            return self.embedded.start(), True
        except EmbeddedDatabaseError as exc:
            fail(str(exc))

    def __exit__(self, *exc):
        if self.embedded is not None:
            self.embedded.stop()


# --- serve -----------------------------------------------------------------------------------

async def serve(settings, uri: str, is_ferretdb, jwt_secret: str, sockets=None,
                embedded=None, autoreload: bool = False) -> None:
    from .runtime.server import Server

    server = Server(settings, uri, jwt_secret, is_ferretdb, embedded)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await server.start(sockets)
    if autoreload:
        from .runtime import devmode
        devmode.start_autoreload()
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
    dev = args.dev or settings.dev
    if args.workers < 1:
        fail("--workers must be at least 1")
    if dev and args.workers > 1:
        fail("--dev (DEV=1) runs one worker: autoreload restarts one process")
    if args.workers > 1 and not settings.redis_url:
        fail("--workers N > 1 needs REDIS_URL: events must reach subscribers in every worker "
             "through Redis pub/sub (e.g. REDIS_URL=redis://127.0.0.1:6379/0)")
    if args.workers > 1 and settings.read_cache == "on":
        fail("READ_CACHE=on is refused with --workers N > 1: a write in one worker cannot empty "
             "the others' caches, so a client could read a document older than its own write "
             "(use READ_CACHE=auto or off)")
    if args.workers > 1 and settings.embedded_database:
        # Refused before the embedded database is started for nothing.
        check_workers_database(args.workers, settings, True)
    jwt_secret = resolve_jwt_secret(settings.jwt_secret, settings.data_dir)
    if args.dev_child:
        # The reloading server of `serve --dev`: its parent holds the database.
        from .runtime.metrics_multiprocess import in_process
        in_process()  # one process: no metrics files, whatever PROMETHEUS_MULTIPROC_DIR says
        asyncio.run(serve(settings, settings.mongodb_uri, None, jwt_secret, autoreload=True))
        return
    endpoint = DatabaseEndpoint(settings)
    with endpoint as (uri, is_ferretdb):
        embedded = endpoint.embedded
        if dev:
            from .runtime import devmode
            devmode.supervise(uri)
        elif args.workers > 1:
            from .runtime.workers import run_workers
            is_ferretdb = check_workers_database(args.workers, settings, is_ferretdb)

            def on_other_exit(pid, code, stopping):
                # The parent started the embedded database, so the parent restarts it.
                if embedded is not None and embedded.process.pid == pid:
                    restart_blocking(embedded, code, stopping)

            run_workers(args.workers, settings,
                        lambda sockets: serve(settings, uri, is_ferretdb, jwt_secret, sockets),
                        on_other_exit)
        else:
            from .runtime.metrics_multiprocess import in_process
            in_process()  # one process: no metrics files, whatever PROMETHEUS_MULTIPROC_DIR says
            asyncio.run(serve(settings, uri, is_ferretdb, jwt_secret, embedded=embedded))


# --- create-admin ----------------------------------------------------------------------------

async def create_admin(settings, uri, is_ferretdb, username, email, password) -> None:
    from .schemas.users import RegisterRequest
    from .accounts.users import UserStore

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
    with DatabaseEndpoint(settings, share=True) as (uri, is_ferretdb):
        asyncio.run(create_admin(settings, uri, is_ferretdb, args.username, args.email, password))


# --- seed ------------------------------------------------------------------------------------

def cmd_seed(args, settings) -> None:
    from .runtime.seed import seed

    if settings.app_env == "production" and not args.force:
        fail("seed makes users with published demo passwords: refused with APP_ENV=production "
             "(--force to do it anyway)")
    with DatabaseEndpoint(settings, share=True) as (uri, is_ferretdb):
        report = asyncio.run(seed(settings, uri, is_ferretdb))
    for line in report:
        print(line)


# --- the parser ------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Tornado API server: blog, catalog, auth and realtime events. "
        "Settings come from the environment and a .env file (see .env.example).")
    # `tornado-app --workers 4` (no subcommand) serves, as `python run.py --workers 4` always did.
    _serve_options(parser, 1, False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve_cmd = sub.add_parser("serve", help="serve HTTP, WebSocket, SSE and long-poll (default)")
    _serve_options(serve_cmd, argparse.SUPPRESS, argparse.SUPPRESS)
    admin = sub.add_parser("create-admin", help="create an admin user (password from "
                           "ADMIN_PASSWORD, else prompted)")
    admin.add_argument("--username", required=True)
    admin.add_argument("--email", required=True)
    seed_cmd = sub.add_parser("seed", help="add demo users, posts with comments and products "
                              "(demo-only passwords; running it again adds nothing)")
    seed_cmd.add_argument("--force", action="store_true",
                          help="seed even with APP_ENV=production")
    return parser


def _serve_options(parser, workers_default, flag_default) -> None:
    parser.add_argument("--workers", type=int, default=workers_default,
                        help="processes on one port (needs REDIS_URL and MongoDB)")
    parser.add_argument("--dev", action="store_true", default=flag_default,
                        help="development: reload on a change of the code, console logs "
                             "(also DEV=1)")
    parser.add_argument("--dev-child", action="store_true", default=flag_default,
                        help=argparse.SUPPRESS)


def log_format(setting: str, serving_dev: bool) -> str:
    """LOG_FORMAT=auto is console lines for `serve --dev`, JSON everywhere else."""
    if setting == "auto":
        return "console" if serving_dev else "json"
    return setting


COMMANDS = {"serve": cmd_serve, None: cmd_serve, "create-admin": cmd_create_admin,
            "seed": cmd_seed}


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        fail(str(exc))
    serving_dev = args.command in (None, "serve") and (args.dev or args.dev_child or settings.dev)
    configure_logging(settings.log_level, log_format(settings.log_format, serving_dev))
    eventloop.install()
    COMMANDS[args.command](args, settings)
