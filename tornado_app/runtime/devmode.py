"""`serve --dev`: a server that restarts itself when its code changes.

Two processes. The parent holds the database (it starts the embedded FerretDB, which must outlive
every reload: a restarted server would find the old one still holding its lock) and runs the
server as a child with MONGODB_URI pointing at it. The child watches its own modules with
Tornado's autoreload, which re-executes the process in place on a change; a child that could not
start (a syntax error mid-edit) is started again by the parent at the next change of a file.
"""

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .embedded import die_with_parent

log = logging.getLogger("tornado_app.dev")

# Every Python file of these packages is watched by the parent while no server runs.
PACKAGES = ("tornado_app", "handlers")
POLL_SECONDS = 0.5


def start_autoreload() -> None:
    """In the child: re-execute on a change of any imported module, or of the .env file."""
    from tornado import autoreload

    from .settings import env_file

    name = env_file()
    if name and Path(name).is_file():
        autoreload.watch(name)
    autoreload.start()
    log.info("autoreload on: the server restarts when its code changes")


def _sources() -> dict[Path, float]:
    found = {}
    for package in PACKAGES:
        module = sys.modules.get(package) or __import__(package)
        for path in Path(module.__file__).parent.rglob("*.py"):
            try:
                found[path] = path.stat().st_mtime
            except OSError:
                pass
    return found


def _wait_for_change(stopping) -> None:
    before = _sources()
    while not stopping():
        time.sleep(POLL_SECONDS)
        if _sources() != before:
            return


def supervise(mongodb_uri: str) -> None:
    """In the parent: runs the reloading server until SIGINT/SIGTERM, restarting it after a
    failed start once the code changes."""
    env = {**os.environ, "MONGODB_URI": mongodb_uri}
    command = [sys.executable, "-m", "tornado_app", "serve", "--dev-child"]
    state = {"stopping": False, "child": None}

    def forward(signum, _frame):
        state["stopping"] = True
        child = state["child"]
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not state["stopping"]:
            # The server ends with this process however it dies (the database does too), and
            # the request survives autoreload's exec.
            state["child"] = child = subprocess.Popen(command, env=env,
                                                      preexec_fn=die_with_parent)
            code = child.wait()
            if state["stopping"]:
                break
            log.warning("the server exited (code %s); it starts again when a file changes", code)
            _wait_for_change(lambda: state["stopping"])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
