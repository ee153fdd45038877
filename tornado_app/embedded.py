"""The embedded default database: FerretDB on SQLite, run as a child process of the server."""

import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
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


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class EmbeddedFerretDB:
    """Starts FerretDB with its SQLite backend on a free loopback port; data under `data_dir`."""

    def __init__(self, data_dir: Path, binary: str | None = None, host: str = "127.0.0.1",
                 port: int | None = None):
        self.data_dir = Path(data_dir).resolve() / "ferretdb"
        self.binary = find_ferretdb(binary)
        self.host = host
        self.port = port
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}/"

    def start(self, timeout: float = 30.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
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
        with open(log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                env={**os.environ, "FERRETDB_TELEMETRY": "disable", "DO_NOT_TRACK": "1"},
                start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedDatabaseError(
                    f"FerretDB exited at start with code {self.process.returncode}; see {log_path}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    log.info("embedded FerretDB on %s (data in %s)", self.uri, self.data_dir)
                    return self.uri
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise EmbeddedDatabaseError(f"FerretDB did not answer within {timeout:.0f} s; see {log_path}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
