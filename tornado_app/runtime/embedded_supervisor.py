"""Keeps the embedded FerretDB running: a database child that dies is started again, with a
growing pause between failed attempts, and every step is logged. One that hangs (alive, but
answering no ping for a long while: stopped, deadlocked) is killed, and so restarted.

Liveness follows what this process can still do about it: while a restart may yet work the
process is alive (GET /health 200, readiness 503); once several attempts in a row have failed
(say the binary or the disk is gone), the process cannot heal itself and /health says so, for
an orchestrator to replace it. It keeps trying meanwhile.
"""

import asyncio
import logging
import time

from .embedded import EmbeddedDatabaseError, EmbeddedFerretDB

log = logging.getLogger(__name__)

CHECK_INTERVAL = 0.5
# Pauses between failed restarts (the first restart is at once); the last one repeats.
BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
# Failed restarts in a row before the process reports itself unable to recover.
FAILURES_BEFORE_UNHEALTHY = 3
# A FerretDB that dies sooner than this after its start counts as a failed restart: a
# database crashing at every start is restarted with the back-off, not in a tight loop.
STABLE_SECONDS = 10.0
# How often the database is pinged; pings go through the read pool, so a backlog of writes
# (which share one connection) does not look like a hang.
PING_INTERVAL = 2.0


def backoff(failures: int) -> float:
    return BACKOFF[min(failures, len(BACKOFF)) - 1] if failures > 0 else 0.0


class EmbeddedSupervisor:
    def __init__(self, embedded: EmbeddedFerretDB, ping=None, hang_seconds: float = 30.0):
        self.embedded = embedded
        # `await ping()` is True when the database answers; after `hang_seconds` without an
        # answer from a FerretDB that is still running, it is killed.
        self.ping = ping
        self.hang_seconds = hang_seconds
        self.failures = 0        # failed restarts in a row
        self.restarts = 0        # successful restarts since the server started
        self.last_error: str | None = None

    @property
    def recoverable(self) -> bool:
        """False once restarts keep failing: restarting this process is then the way out."""
        return self.embedded.running() or self.failures < FAILURES_BEFORE_UNHEALTHY

    def state(self) -> str | None:
        """For /health/ready while the database does not answer; None while FerretDB runs."""
        if self.embedded.running():
            return None
        failed = f" ({self.failures} attempts in a row failed)" if self.failures else ""
        return f"the embedded FerretDB exited; restarting it{failed}"

    async def run(self) -> None:
        await asyncio.gather(self._watch_exit(), self._watch_answers())

    async def _watch_answers(self) -> None:
        silent_since = None
        while True:
            await asyncio.sleep(PING_INTERVAL)
            process = self.embedded.process
            if self.ping is None or not self.embedded.running():
                silent_since = None
                continue
            if await self.ping():
                silent_since = None
                continue
            now = time.monotonic()
            silent_since = silent_since or now
            if now - silent_since >= self.hang_seconds and process is self.embedded.process \
                    and self.embedded.running():
                log.error("the embedded FerretDB (pid %s) is running but has answered no ping "
                          "for %.0f s; killing it to restart it", process.pid, now - silent_since)
                process.kill()
                silent_since = None

    async def _watch_exit(self) -> None:
        while True:
            await asyncio.sleep(CHECK_INTERVAL)
            embedded = self.embedded
            lived = time.monotonic() - embedded.started_at
            if embedded.running():
                if self.failures and lived >= STABLE_SECONDS:
                    self.failures = 0
                continue
            if lived < STABLE_SECONDS and self.restarts:
                self.failures += 1  # one of our restarts did not last
            log.error("the embedded FerretDB exited with code %s after %.1f s; restarting it",
                      embedded.process.returncode, lived)
            await self._restart()

    async def _restart(self) -> None:
        while True:
            pause = backoff(self.failures)
            if pause:
                await asyncio.sleep(pause)
            try:
                await self.embedded.start_async()
            except EmbeddedDatabaseError as exc:
                self.failures += 1
                self.last_error = str(exc)
                log.error("could not restart the embedded FerretDB (%d failed in a row): %s; "
                          "next attempt in %.1f s", self.failures, exc, backoff(self.failures))
                continue
            self.restarts += 1
            log.warning("embedded FerretDB restarted on %s (pid %s)", self.embedded.uri,
                        self.embedded.process.pid)
            return


def restart_blocking(embedded: EmbeddedFerretDB, code: int, stopping) -> None:
    """The same, for the parent of several workers, which has no event loop: called when it
    reaped the exited FerretDB; returns once it runs again or `stopping()`."""
    embedded.process.returncode = code  # reaped by the parent's wait, not by Popen
    log.error("the embedded FerretDB exited with code %s; restarting it", code)
    failures = 0
    while not stopping():
        time.sleep(backoff(failures))
        try:
            embedded.start()
        except EmbeddedDatabaseError as exc:
            failures += 1
            log.error("could not restart the embedded FerretDB (%d failed in a row): %s",
                      failures, exc)
            continue
        log.warning("embedded FerretDB restarted on %s (pid %s)", embedded.uri,
                    embedded.process.pid)
        return
