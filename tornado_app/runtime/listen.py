"""The listening sockets, with an accept queue sized for a reconnect storm.

Tornado listens with a backlog of 128. After a deploy every client reconnects at once: with 256
handshakes in flight, opening 15,000 connections overflowed that queue 2,980 times (each
overflow is a dropped handshake the client retries a second or more later) and the server
completed 1,600-2,700 handshakes/s instead of 4,354/s.

A queue of the kernel's maximum (net.core.somaxconn, 4096 here) is not enough either when the
clients do not pace themselves: 15,000 connects at once fill it in a few ms, faster than any
accept loop drains it, and the rest overflow (measured: 22,889 overflows, the last client
resumed after 21 s, while the server was busy for only 5.7 of them). The kernel caps one
socket's queue at somaxconn, so a larger LISTEN_BACKLOG is spread over several sockets on the
same port (SO_REUSEPORT): the kernel hashes each new connection to one of them, and the event
loop accepts on all of them. They are shared by every worker of `--workers N` like one socket.
"""

import socket
from pathlib import Path

from tornado.ioloop import IOLoop
from tornado.netutil import bind_sockets

SOMAXCONN = Path("/proc/sys/net/core/somaxconn")
# Linux's own somaxconn since 5.4, where the file cannot be read (another system, a sandbox).
FALLBACK_BACKLOG = 4096
# The default total: room for 15,000 clients connecting at once (issue #14), with a margin.
STORM_BACKLOG = 16384
# Sockets on one port at most: each is one more accept handler on the event loop.
MAX_SOCKETS = 16
# Connections accepted per turn of the event loop, over all the sockets. Tornado accepts up to
# 128 per socket and turn; each then costs ~0.3 ms of handshake in the next turn, so a storm
# made turns of a second and more, during which nothing else ran: a database answer waited so
# long that every upgrade waiting on it (one token lookup shared by all) failed with 503
# (measured: 11,774 of 15,000 reconnects). The rest waits in the kernel's queue, which is
# what it is sized for.
ACCEPTS_PER_TURN = 64


def system_backlog(path: Path = SOMAXCONN) -> int:
    """The largest backlog the kernel grants one listening socket."""
    try:
        value = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return FALLBACK_BACKLOG
    return value if value > 0 else FALLBACK_BACKLOG


def default_backlog() -> int:
    return max(system_backlog(), STORM_BACKLOG)


def split_backlog(backlog: int, per_socket_max: int) -> list[int]:
    """The backlog of each socket: as few sockets as hold `backlog` (at most MAX_SOCKETS, and
    one where SO_REUSEPORT does not exist), sharing it evenly."""
    count = min(MAX_SOCKETS, -(-backlog // per_socket_max))
    if count <= 1 or not hasattr(socket, "SO_REUSEPORT"):
        return [min(backlog, per_socket_max)]
    each = min(per_socket_max, -(-backlog // count))
    return [each] * count


def listening_sockets(settings) -> list:
    """The sockets the server accepts on, for one process or shared by `--workers N`."""
    backlogs = split_backlog(settings.listen_backlog, system_backlog())
    if len(backlogs) == 1:
        return bind_sockets(settings.port, settings.host, backlog=backlogs[0])
    sockets = bind_sockets(settings.port, settings.host, backlog=backlogs[0], reuse_port=True)
    port = sockets[0].getsockname()[1]  # the port the first one got, if it was 0
    for backlog in backlogs[1:]:
        sockets += bind_sockets(port, settings.host, backlog=backlog, reuse_port=True)
    return sockets


def add_accept_handler(sock, callback, per_turn: int):
    """tornado.netutil.add_accept_handler, accepting at most `per_turn` connections per turn of
    the loop (the socket stays readable while more wait, so the next turn takes the next ones).
    Returns a function that removes the handler."""
    io_loop = IOLoop.current()
    removed = [False]

    def accept_handler(fd, events) -> None:
        for _ in range(per_turn):
            if removed[0]:
                return  # the socket was closed
            try:
                connection, address = sock.accept()
            except BlockingIOError:
                return  # none left
            except ConnectionAbortedError:
                continue  # closed while still in the queue
            callback(connection, address)

    def remove_handler() -> None:
        io_loop.remove_handler(sock)
        removed[0] = True

    io_loop.add_handler(sock, accept_handler, IOLoop.READ)
    return remove_handler
