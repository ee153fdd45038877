"""Every use of Tornado's private names, in one place, and checked when this module is imported.

The server reaches past Tornado's public API where that API has no way to do what it needs:
take a socket away from an HTTP connection and give it back (parked long-polls, WebSocket
upgrades: web/detached_http.py, web/httpserver.py), reset a response without Tornado's
per-request header checks (handlers/base.py), read a stream's pending output (SSE
backpressure). Nothing else in the project touches a name of Tornado's that starts with an
underscore: it calls the functions here.

Private names can change in any release, so setup.cfg pins Tornado to the minor version these
were tested on, and NEEDED below is checked at import: a Tornado that lacks one of them (or has
it as something else) stops the server at start-up with the version and the name, rather than
failing on the first parked poll in production.
"""

import dis
from dataclasses import dataclass

import tornado
from tornado import http1connection, httpserver, iostream, tcpserver, web

TESTED_ON = "6.6"  # the minor version the test suite ran on; setup.cfg pins tornado>=6.6,<6.7


class TornadoMismatch(ImportError):
    """The installed Tornado lacks a private name the server relies on."""


@dataclass(frozen=True)
class Need:
    """One private name: `kind` is "class", "function" or "method" (found on `owner`, a module
    or class), or "attribute": an instance attribute that `owner.<set_in>` assigns to `self`
    (instance attributes exist on no class, so the assignment is looked for in the bytecode).
    `assigns`, for a method, is exactly the attributes it must assign (when we replace it)."""

    owner: object
    name: str
    kind: str
    set_in: str = "__init__"
    assigns: frozenset = frozenset()


_HTTPServer, _Stream = httpserver.HTTPServer, iostream.BaseIOStream
_Conn, _Handler = http1connection.HTTP1Connection, web.RequestHandler

NEEDED = (
    Need(httpserver, "_HTTPRequestContext", "class"),
    Need(_HTTPServer, "_connections", "attribute", set_in="initialize"),
    Need(tcpserver.TCPServer, "_sockets", "attribute"),
    Need(tcpserver.TCPServer, "_handlers", "attribute"),
    Need(tcpserver.TCPServer, "_handle_connection", "method"),
    Need(_Stream, "_read_buffer", "attribute"),
    Need(_Stream, "_read_buffer_size", "attribute"),
    Need(_Stream, "_write_buffer", "attribute"),
    Need(_Stream, "_state", "attribute"),
    Need(_Stream, "_closed", "attribute"),
    Need(_Conn, "_disconnect_on_finish", "attribute"),
    Need(_Conn, "_read_finished", "attribute"),
    Need(_Handler, "_headers_written", "attribute"),
    Need(_Handler, "_finished", "attribute"),
    Need(_Handler, "_break_cycles", "method"),
    # BaseHandler.clear() replaces this one (through reset_response below): it must set what
    # Tornado's sets, no more and no less.
    Need(_Handler, "clear", "method",
         assigns=frozenset({"_headers", "_write_buffer", "_status_code", "_reason"})),
)


def _assigned(function) -> set[str]:
    return {ins.argval for ins in dis.get_instructions(function) if ins.opname == "STORE_ATTR"}


def _problem(need: Need) -> str | None:
    """What is wrong with `need` on the installed Tornado, or None."""
    owner = getattr(need.owner, "__name__", repr(need.owner))
    where = f"{owner}.{need.name}"
    if need.kind == "attribute":
        setter = getattr(need.owner, need.set_in, None)
        if setter is None or not hasattr(setter, "__code__"):
            return f"{owner}.{need.set_in} (which sets {need.name}) is missing"
        if need.name not in _assigned(setter):
            return f"{where}: no longer set by {owner}.{need.set_in}"
        return None
    value = getattr(need.owner, need.name, None)
    if value is None:
        return f"{where} is missing"
    if need.kind == "class" and not isinstance(value, type):
        return f"{where} is not a class"
    if need.kind in ("function", "method") and not callable(value):
        return f"{where} is not callable"
    if need.assigns and _assigned(value) != need.assigns:
        return (f"{where} now sets {sorted(_assigned(value))}, "
                f"not {sorted(need.assigns)}")
    return None


def problems(needs=NEEDED) -> list[str]:
    return [problem for problem in map(_problem, needs) if problem is not None]


def check(needs=NEEDED, version: str = tornado.version) -> None:
    found = problems(needs)
    if found:
        raise TornadoMismatch(
            f"Tornado {version} lacks private names this server relies on (tested on "
            f"Tornado {TESTED_ON}.x; see tornado_app/web/tornado_private.py): " + "; ".join(found))


check()


# --- the HTTP server's connections ---------------------------------------------------------

def request_context(stream, address, protocol, trusted_downstream):
    """What HTTPServer.handle_stream gives a new connection."""
    return httpserver._HTTPRequestContext(stream, address, protocol, trusted_downstream)


def server_connections(server) -> set:
    """The HTTP connections an HTTPServer holds (the live set: add, discard, len)."""
    return server._connections


def accept_callback(server):
    """TCPServer's callback for an accepted (connection, address): wraps it in an IOStream."""
    return server._handle_connection


def add_listener(server, sock, remove_handler) -> None:
    """What TCPServer.add_sockets records of one listening socket (so stop() closes it and
    removes its accept handler), for a server that installs its own accept handler."""
    server._sockets[sock.fileno()] = sock
    server._handlers[sock.fileno()] = remove_handler


def keeps_alive(connection) -> bool:
    """Whether the connection stays open after this answer (Tornado decided it from the request
    line and its Connection header when it read them)."""
    return not connection._disconnect_on_finish


def read_to_end(connection) -> bool:
    """Whether the request has been read to its end (True for a connection that is no
    HTTP1Connection, which has nothing left to read)."""
    return getattr(connection, "_read_finished", True)


# --- streams -------------------------------------------------------------------------------

def put_back(stream, unread: bytes) -> None:
    """Feeds bytes already read from the socket to a new IOStream, which has no public way."""
    stream._read_buffer += unread
    stream._read_buffer_size = len(unread)


def pending_output(stream) -> int:
    """Bytes written to the stream that the socket has not taken yet."""
    return len(stream._write_buffer)


def abandon(stream) -> tuple[object, bytes]:
    """(the socket, the bytes read past the request) of a detached IOStream, which afterwards
    can never close or watch the socket."""
    if stream._state is not None:
        stream.io_loop.remove_handler(stream.fileno())
        stream._state = None
    unread = bytes(stream._read_buffer[:stream._read_buffer_size])
    sock = stream.socket
    stream.socket = None
    stream._closed = True
    return sock, unread


# --- request handlers ----------------------------------------------------------------------

def reset_response(handler, headers) -> None:
    """RequestHandler.clear() with the headers given (checked above: it sets these four)."""
    handler._headers = headers
    handler._write_buffer = []
    handler._status_code = 200
    handler._reason = "OK"


def response_headers(handler):
    """The HTTPHeaders the handler is about to send (Tornado keeps no public view of them)."""
    return handler._headers


def written(handler) -> bytes:
    """What the handler has written and not flushed."""
    return b"".join(handler._write_buffer)


def headers_written(handler) -> bool:
    return handler._headers_written


def finished(handler) -> bool:
    return handler._finished


def break_cycles(handler) -> None:
    """What finish() does last, for a handler whose connection was detached."""
    handler._break_cycles()
