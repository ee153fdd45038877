"""Processes this benchmark owns: start them, read their memory and CPU from /proc, stop them by PID.

Nothing here touches a process it did not start: every stop goes to a PID we recorded.
"""

import hashlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import time
from itertools import count
from pathlib import Path

from tornado_app.runtime.embedded import EmbeddedFerretDB, free_port  # noqa: F401  (re-exported)

CLK_TCK = os.sysconf("SC_CLK_TCK")


class Proc:
    """One child process with its output in a log file; `stop()` ends it and any children it
    forked (recorded before the stop), by PID only."""

    def __init__(self, name: str, args: list[str], log_dir: Path, env: dict | None = None,
                 cwd: Path | None = None):
        log_dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, cwd=cwd,
                                          env={**os.environ, **(env or {})},
                                          start_new_session=True)
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def children(self) -> list[int]:
        return children(self.pid)

    def stop(self, timeout: float = 20.0) -> None:
        if not self.alive():
            return
        kids = self.children()
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        # Workers normally exit with their parent; any left over are ours to end.
        deadline = time.monotonic() + 5
        for pid in kids:
            while _exists(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _exists(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _exists(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out += [int(x) for x in task.read_text().split()]
        except OSError:
            pass
    return out


def rss_kb(pid: int) -> int:
    """Resident memory of one process (VmRSS), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def cpu_seconds(pid: int) -> float:
    return sum(cpu_split(pid))


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process: the system part is the kernel's work on its
    behalf (a loopback send includes the receiving side's TCP processing)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # utime, stime


def settle(pids: list[int], window: float = 0.5, busy: float = 0.05, timeout: float = 60.0) -> float:
    """Waits until the processes use under `busy` of a core over `window` seconds (work queued
    by the load has been done), at most `timeout`. Returns the seconds waited."""
    start = time.monotonic()
    last = sum(cpu_seconds(p) for p in pids)
    while time.monotonic() - start < timeout:
        time.sleep(window)
        now = sum(cpu_seconds(p) for p in pids)
        if now - last < busy * window * len(pids):
            break
        last = now
    return time.monotonic() - start


def code_version(paths=("run.py", "tornado_app", "handlers"), root: Path | None = None) -> str:
    """A short hash of the server's source as it is on disk now: the server may be edited while
    the benchmark runs, and the report says when runs measured different code. `root`: the
    code tree (default: this checkout)."""
    from .config import ROOT
    root = Path(root or ROOT)
    digest = hashlib.sha1()
    for path in paths:
        target = root / path
        for file in sorted(target.rglob("*.py")) if target.is_dir() else [target]:
            digest.update(str(file.relative_to(root)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:10]


def wait_for_children(proc: Proc, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len(proc.children()) < count and time.monotonic() < deadline:
        time.sleep(0.1)


def wait_http(port: int, path: str, proc: Proc, timeout: float = 60.0) -> None:
    """Until GET `path` answers 200 (the server is up), or raises with the server's log tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                conn.close()
                return
            conn.close()
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} did not answer {path} within {timeout:.0f} s:\n{proc.tail()}")


class Redis:
    """A throwaway redis-server on a free loopback port, no persistence."""

    def __init__(self, log_dir: Path):
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found: run 'make redis' (Debian's package)")
        self.port = free_port()
        self.proc = Proc("redis", [binary, "--port", str(self.port), "--bind", "127.0.0.1",
                                   "--save", "", "--appendonly", "no", "--maxclients", "1000"],
                         log_dir)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start:\n{self.proc.tail()}")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.stop()


# Client source addresses: each client process of each run gets one of its own, so no run
# waits for the previous run's ports (TIME_WAIT) and no process runs out of ephemeral ports.
# Separate commands start at different points, for the same reason.
_addresses = count((os.getpid() % 40) * 250)


def next_source_address() -> str:
    n = next(_addresses)
    return f"127.{1 + n // 62500 % 250}.{1 + n // 250 % 250}.{1 + n % 250}"
