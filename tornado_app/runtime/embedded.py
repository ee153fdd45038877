"""The embedded default database: FerretDB on SQLite, run as a child process of the server.

The child never outlives the server: on Linux the kernel sends it SIGTERM when the server dies,
however it dies (PR_SET_PDEATHSIG). And one data directory never has two FerretDBs: a lock file
in it is held by the server and, inherited, by its FerretDB, so a second server on the same
directory, or one started while a FerretDB of a killed server is still running there, is told so
instead of starting another.
"""

import asyncio
import ctypes
import errno
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FERRETDB_VERSION = "v1.24.2"


class EmbeddedDatabaseError(RuntimeError):
    pass


def find_ferretdb(configured: str | None = None) -> str:
    candidates = [configured] if configured else []
    candidates += [str(PROJECT_ROOT / ".bin" / "ferretdb"), shutil.which("ferretdb")]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise EmbeddedDatabaseError(
        "no FerretDB binary found (looked at FERRETDB_BIN, .bin/ferretdb and the PATH).\n"
        "Ways out:\n"
        "  - build it: 'make ferretdb' (needs Go; fetches FerretDB "
        f"{FERRETDB_VERSION} from the Go module proxy),\n"
        "  - install FerretDB yourself and put 'ferretdb' on the PATH or set FERRETDB_BIN,\n"
        "  - or use MongoDB: set MONGODB_URI=mongodb://HOST:27017")


PR_SET_PDEATHSIG = 1


def _load_prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Looked up once, here: the function run in the child between fork and exec must not import
# or load anything.
_prctl = _load_prctl()


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """In a child (between fork and exec, or a forked worker): `signum` when the parent dies.
    The kernel ties it to the thread that forked, so callers fork from the main thread."""
    if _prctl is None:
        return
    parent = os.getppid()
    _prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request was in place
        os.kill(os.getpid(), signum)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class EmbeddedFerretDB:
    """Starts FerretDB with its SQLite backend on a free loopback port; data under `data_dir`."""

    def __init__(self, data_dir: Path, binary: str | None = None, host: str = "127.0.0.1",
                 port: int | None = None, die_with_parent: bool = True):
        self.data_dir = Path(data_dir).resolve() / "ferretdb"
        self.binary = find_ferretdb(binary)
        self.host = host
        self.port = port
        self.die_with_parent = die_with_parent
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0
        self._lock_fd: int | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}/"

    def _lock(self) -> None:
        """Takes the data directory's lock, or says who holds it."""
        if self._lock_fd is not None:
            return  # ours already (a restart)
        path = self.data_dir / "ferretdb.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            holder = path.read_text(errors="replace").strip() or "unknown"
            raise EmbeddedDatabaseError(
                f"a FerretDB is already running on {self.data_dir} ({holder}): another server "
                "on the same DATA_DIR, or the database of a server that was killed. Stop it (or "
                "that server) first, or give this server a DATA_DIR of its own; two FerretDBs "
                "on one data directory would both write to the same SQLite files.") from None
        self._lock_fd = fd

    def _write_lock_info(self) -> None:
        info = f"ferretdb pid {self.process.pid}, server pid {os.getpid()}, port {self.port}\n"
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, info.encode(), 0)

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _spawn(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        self.port = self.port or free_port(self.host)
        log_path = self.data_dir / "ferretdb.log"
        args = [
            self.binary,
            "--handler=sqlite",
            f"--sqlite-url=file:{self.data_dir}/",
            f"--listen-addr={self.host}:{self.port}",
            # No telemetry, no state directory, no debug listener: nothing reaches out.
            "--telemetry=disable",
            "--state-dir=-",
            "--debug-addr=-",
            "--log-level=WARN",
        ]
        try:
            with open(log_path, "ab") as log_file:
                # The lock's file stays open in FerretDB: the lock is held for as long as it
                # runs, even past a server that was killed.
                self.process = subprocess.Popen(
                    args, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                    env={**os.environ, "FERRETDB_TELEMETRY": "disable", "DO_NOT_TRACK": "1"},
                    start_new_session=True, pass_fds=(self._lock_fd,),
                    preexec_fn=die_with_parent if self.die_with_parent else None)
        except OSError as exc:
            raise EmbeddedDatabaseError(f"could not run FerretDB ({self.binary}): {exc}") from None
        self.started_at = time.monotonic()
        self._write_lock_info()

    def _exited_at_start(self) -> EmbeddedDatabaseError:
        return EmbeddedDatabaseError(
            f"FerretDB exited at start with code {self.process.returncode}; "
            f"see {self.data_dir / 'ferretdb.log'}")

    def start(self, timeout: float = 30.0) -> str:
        """Starts FerretDB and waits until it accepts connections (blocking)."""
        self._spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise self._exited_at_start()
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    log.info("embedded FerretDB on %s (data in %s)", self.uri, self.data_dir)
                    return self.uri
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise EmbeddedDatabaseError(f"FerretDB did not answer within {timeout:.0f} s; see "
                                    f"{self.data_dir / 'ferretdb.log'}")

    async def start_async(self, timeout: float = 30.0) -> str:
        """`start` for a running event loop: the same port, so the server's clients reconnect."""
        self._spawn()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise self._exited_at_start()
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port), 0.5)
                writer.close()
                return self.uri
            except (OSError, asyncio.TimeoutError):
                await asyncio.sleep(0.05)
        self.process.kill()
        raise EmbeddedDatabaseError(f"FerretDB did not answer within {timeout:.0f} s; see "
                                    f"{self.data_dir / 'ferretdb.log'}")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._unlock()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
