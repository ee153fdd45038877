"""`--workers N`: N processes sharing one listening socket, each with its own IOLoop.

The parent binds the port, forks the workers, forwards SIGTERM/SIGINT to them, restarts one
that crashes, and returns when all have exited. Nothing async runs in the parent, so no
event loop or database client is ever inherited across fork(). It also keeps the directory the
workers share their metrics in (metrics_multiprocess.py).
"""

import asyncio
import logging
import os
import signal
import time

from .embedded import die_with_parent
from .listen import listening_sockets
from .metrics_multiprocess import SharedMetrics

log = logging.getLogger(__name__)


def run_workers(count: int, settings, serve, on_other_exit=None) -> int:
    """`serve(sockets)` is the coroutine function one worker runs until it is told to stop.
    `on_other_exit(pid, exit_code, stopping)` hears of any other child that exits (the embedded
    database), `stopping()` telling whether the parent is shutting down."""
    sockets = listening_sockets(settings)
    # Before the first fork: every worker writes its metrics where any of them reads them all.
    metrics = SharedMetrics.prepare()
    children: dict[int, int] = {}
    stopping = False

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            # A worker whose parent is gone (killed) shuts down: nobody would restart it or
            # stop it, and it would hold the port.
            die_with_parent(signal.SIGTERM)
            code = 0
            try:
                asyncio.run(serve(sockets))
            except BaseException:
                log.exception("worker %d failed", index)
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        children[pid] = index

    def forward(signum, _frame) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    for index in range(count):
        spawn(index)
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    log.info("%d workers on http://%s:%s", count, settings.host, sockets[0].getsockname()[1])
    failures = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        index = children.pop(pid, None)
        code = os.waitstatus_to_exitcode(status)
        if index is None:
            if on_other_exit is not None:
                on_other_exit(pid, code, lambda: stopping)
            continue
        metrics.worker_exited(pid)  # its open connections no longer count
        if not stopping and code != 0:
            failures += 1
            log.warning("worker %d exited with %d; starting it again", index, code)
            time.sleep(min(failures, 5) * 0.2)
            spawn(index)
    for sock in sockets:
        sock.close()
    metrics.close()
    return 0
