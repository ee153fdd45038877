"""The listening sockets, with an accept queue sized for a reconnect storm.

Tornado listens with a backlog of 128. After a deploy every client reconnects at once: with 256
handshakes in flight, opening 15,000 connections overflowed that queue 2,980 times (each
overflow is a dropped handshake the client retries a second or more later) and the server
completed 1,600-2,700 handshakes/s instead of 4,354/s. The kernel caps any backlog at
net.core.somaxconn, so that is the default.
"""

from pathlib import Path

from tornado.netutil import bind_sockets

SOMAXCONN = Path("/proc/sys/net/core/somaxconn")
# Linux's own somaxconn since 5.4, where the file cannot be read (another system, a sandbox).
FALLBACK_BACKLOG = 4096


def system_backlog(path: Path = SOMAXCONN) -> int:
    """The largest backlog the kernel grants a listening socket."""
    try:
        value = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return FALLBACK_BACKLOG
    return value if value > 0 else FALLBACK_BACKLOG


def listening_sockets(settings) -> list:
    """The sockets the server accepts on, for one process or shared by `--workers N`."""
    return bind_sockets(settings.port, settings.host, backlog=settings.listen_backlog)
