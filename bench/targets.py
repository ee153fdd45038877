"""The servers under test and what they share: one FerretDB per scenario command (the `Stack`),
our server (`Ours`, one or several workers) and the two peers (`Peer`).

Each target is started fresh for every run on a free port, so runs are independent, and is
stopped by its PID afterwards.
"""

import os
import shutil
import sys
import tempfile
from pathlib import Path

from . import api, procs
from .config import ROOT, Mode
from .procs import EmbeddedFerretDB, Proc, free_port

DB_NAME = "tornado_app"


class Stack:
    """A FerretDB in a temporary directory, with the bench user and one seeded post in it."""

    def __init__(self, mode: Mode, scenario: str):
        self.mode = mode
        self.log_dir = mode.results_dir / "logs" / scenario
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-"))
        self.ferretdb = None
        self.uri = None
        self.post_id = None

    def __enter__(self):
        try:
            self.ferretdb = EmbeddedFerretDB(self.tmp, os.environ.get("FERRETDB_BIN"))
            self.uri = self.ferretdb.start()
            # Our server once, to create the user every run logs in as and the post HTTP runs read.
            ours = Ours(self)
            ours.start()
            try:
                status, doc, _ = api.create_post(ours.port, ours.token, "Seeded post")
                if status != 201:
                    raise RuntimeError(f"creating the seeded post answered {status}: {doc}")
                self.post_id = doc["id"]
            finally:
                ours.stop()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        if self.ferretdb is not None:
            self.ferretdb.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


class Target:
    name = label = ""
    hello_path = ws_path = poll_path = ""
    is_ours = False
    token = None
    code = None
    root = ROOT  # the code tree the server runs from (its cwd)

    def __init__(self, stack: Stack):
        self.stack = stack
        self.proc: Proc | None = None
        self.port: int | None = None
        self.runs_started = 0

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict:
        return {}

    def start(self) -> None:
        self.runs_started += 1
        self.code = procs.code_version(root=self.root) if self.is_ours else None
        self.port = free_port()
        self.proc = Proc(f"{self.name}-{self.runs_started}", self.command(), self.stack.log_dir,
                         env=self.env(), cwd=self.root)
        try:
            procs.wait_http(self.port, self.hello_path, self.proc)
            self.after_start()
        except BaseException:
            self.stop()  # never leave a server behind
            raise

    def after_start(self) -> None:
        pass

    def pids(self) -> list[int]:
        """The processes that serve requests."""
        return [self.proc.pid]

    def rss_kb(self) -> int:
        return sum(procs.rss_kb(pid) for pid in self.pids())

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


class Ours(Target):
    name, label = "ours", "ours"
    hello_path, ws_path = "/health", "/api/v1/ws"
    poll_path = "/api/v1/poll?channels=posts&timeout=60"
    is_ours = True

    def __init__(self, stack: Stack, workers: int = 1, redis_url: str | None = None,
                 root: Path | None = None, name: str | None = None,
                 settings: dict | None = None):
        super().__init__(stack)
        self.settings = settings or {}  # more environment: settings of this run's server
        if root is not None:
            self.root = Path(root)
        if name is not None:
            self.name = self.label = name
        self.workers = workers
        self.redis_url = redis_url
        if workers > 1:
            self.name = self.label = f"ours-{workers}w"

    def command(self) -> list[str]:
        return [sys.executable, "run.py", "--workers", str(self.workers)]

    def env(self) -> dict:
        # Access logs off (LOG_LEVEL=WARNING), as for the peers; every feature stays on.
        env = {"HOST": "127.0.0.1", "PORT": str(self.port), "MONGODB_URI": self.stack.uri,
               "MONGODB_DB": DB_NAME, "DATA_DIR": str(self.stack.tmp), "LOG_LEVEL": "WARNING"}
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        if self.workers > 1:
            # The stack is FerretDB, where several workers are refused unless this opt-in says
            # the load is read-only: a benchmark run writes only inserts (posts, logins), never
            # concurrent updates of one document.
            env["ALLOW_UNSAFE_MULTIWORKER_FERRETDB"] = "1"
        env.update(self.settings)
        return env

    def after_start(self) -> None:
        if self.workers > 1:
            procs.wait_for_children(self.proc, self.workers)
        api.ensure_user(self.port)
        self.token = api.login(self.port)  # one token, reused by every connection of the run

    def pids(self) -> list[int]:
        # With --workers N the parent only forks and waits: the workers are its children.
        return self.proc.children() if self.workers > 1 else [self.proc.pid]

    def post_path(self, post_id: str) -> str:
        return f"/api/v1/posts/{post_id}"

    def trigger(self) -> dict:
        status, _, seconds = api.create_post(self.port, self.token)
        return {"status": status, "seconds": seconds, "what": "POST /api/v1/posts"}


class Peer(Target):
    hello_path, ws_path, poll_path = "/hello", "/ws", "/poll"
    module = ""

    def command(self) -> list[str]:
        return [sys.executable, "-m", self.module, "--port", str(self.port),
                "--mongodb-uri", self.stack.uri, "--db", DB_NAME]

    def post_path(self, post_id: str) -> str:
        return f"/posts/{post_id}"

    def trigger(self) -> dict:
        status, _, seconds = api.request(self.port, "POST", "/broadcast", timeout=120)
        return {"status": status, "seconds": seconds, "what": "POST /broadcast"}


class TornadoPeer(Peer):
    name, label = "tornado", "bare Tornado"
    module = "bench.peers.tornado_peer"


class FastAPIPeer(Peer):
    name, label = "fastapi", "FastAPI/uvicorn"
    module = "bench.peers.fastapi_peer"


def peers(stack: Stack) -> list[Target]:
    return [TornadoPeer(stack), FastAPIPeer(stack)]
