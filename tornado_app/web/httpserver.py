"""The HTTP server with a cap on open connections, refused cleanly rather than by running out
of file descriptors."""

import json
import uuid

from tornado.http1connection import HTTP1ServerConnection
from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream

from ..runtime.listen import ACCEPTS_PER_TURN, add_accept_handler
from .tornado_private import accept_callback, add_listener, put_back, request_context, server_connections


def _refusal() -> bytes:
    body = json.dumps({"error": {"code": "service_unavailable",
                                 "message": "too many open connections, try again shortly"}})
    return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Retry-After: 5\r\nConnection: close\r\nX-Request-ID: %s\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (uuid.uuid4().hex.encode(), len(body), body.encode()))


def _keep_nodelay(value: bool) -> None:
    pass


def _nodelay_for_good(stream) -> None:
    """Nagle's algorithm off once per connection, and left off.

    Tornado turns it off as each answer ends and back on once it is written: two setsockopt
    calls and two reads of socket.family per request, 2.6% of the server's CPU samples on
    GET /api/v1/posts/{id} under wrk (py-spy). Every answer but a stream's goes out in one
    write, so holding a segment back until the previous one is acknowledged never saves a
    packet; streams (SSE) want each event sent at once. Parked long-polls and WebSockets set
    the option on the socket themselves."""
    stream.set_nodelay(True)
    stream.set_nodelay = _keep_nodelay  # this stream's, for the HTTP1Connection of each request


class CountedConnection(HTTP1ServerConnection):
    """An HTTP connection that leaves the server's count as soon as its socket is taken away
    (tornado_app/web/detached_http.py): Tornado only forgets it once its request loop has unwound,
    a few turns of the loop later, and meanwhile it would be counted twice, as an HTTP
    connection and as the parked poll or WebSocket it became."""

    def __init__(self, server, stream, params, context):
        super().__init__(stream, params, context)
        self.server = server

    def release(self) -> None:
        server_connections(self.server).discard(self)


class CappedHTTPServer(HTTPServer):
    def initialize(self, *args, max_connections: int, open_websockets, parked_polls,
                   **kwargs) -> None:
        super().initialize(*args, **kwargs)
        self.max_connections = max_connections
        # Upgraded WebSockets leave the HTTP server's own bookkeeping, so they are counted apart.
        self.open_websockets = open_websockets
        # So do connections lent to parked long-polls (tornado_app/realtime/transports/parked_poll.py).
        self.parked_polls = parked_polls
        self.refused = 0

    def add_sockets(self, sockets) -> None:
        # TCPServer.add_sockets, with a bounded number of accepts per turn of the loop.
        sockets = list(sockets)
        per_turn = max(1, ACCEPTS_PER_TURN // len(sockets)) if sockets else 1
        for sock in sockets:
            add_listener(self, sock,
                         add_accept_handler(sock, accept_callback(self), per_turn))

    def open_connections(self) -> int:
        return len(server_connections(self)) + len(self.open_websockets) + self.parked_polls.sockets_held

    def handle_stream(self, stream, address) -> None:
        if self.open_connections() >= self.max_connections:
            self.refused += 1
            stream.write(_refusal()).add_done_callback(lambda _: stream.close())
            return
        self._serve(stream, address)

    def _serve(self, stream, address) -> None:
        # HTTPServer.handle_stream, with a CountedConnection.
        _nodelay_for_good(stream)
        context = request_context(stream, address, self.protocol, self.trusted_downstream)
        conn = CountedConnection(self, stream, self.conn_params, context)
        server_connections(self).add(conn)
        conn.start_serving(self)

    def on_close(self, server_conn) -> None:
        server_connections(self).discard(server_conn)  # already gone if it was released

    def take_back(self, sock, unread: bytes) -> None:
        """A connection lent to a parked long-poll comes back for its next request, with any
        bytes of it already read. It was admitted once, so the cap does not turn it away now."""
        try:
            address = sock.getpeername()
        except OSError:  # the client has gone meanwhile
            sock.close()
            return
        # As TCPServer does for a new connection.
        stream = IOStream(sock, max_buffer_size=self.max_buffer_size,
                          read_chunk_size=self.read_chunk_size)
        if unread:
            put_back(stream, unread)
        self._serve(stream, address)
