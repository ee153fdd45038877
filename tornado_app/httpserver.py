"""The HTTP server with a cap on open connections, refused cleanly rather than by running out
of file descriptors."""

import json
import uuid

from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream


def _refusal() -> bytes:
    body = json.dumps({"error": {"code": "service_unavailable",
                                 "message": "too many open connections, try again shortly"}})
    return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Retry-After: 5\r\nConnection: close\r\nX-Request-ID: %s\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (uuid.uuid4().hex.encode(), len(body), body.encode()))


class CappedHTTPServer(HTTPServer):
    def initialize(self, *args, max_connections: int, open_websockets, parked_polls,
                   **kwargs) -> None:
        super().initialize(*args, **kwargs)
        self.max_connections = max_connections
        # Upgraded WebSockets leave the HTTP server's own bookkeeping, so they are counted apart.
        self.open_websockets = open_websockets
        # So do connections lent to parked long-polls (tornado_app/realtime/parked_poll.py).
        self.parked_polls = parked_polls
        self.refused = 0

    def handle_stream(self, stream, address) -> None:
        if (len(self._connections) + len(self.open_websockets) + self.parked_polls.sockets_held
                >= self.max_connections):
            self.refused += 1
            stream.write(_refusal()).add_done_callback(lambda _: stream.close())
            return
        super().handle_stream(stream, address)

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
        if unread:  # IOStream has no public way to put bytes back
            stream._read_buffer += unread
            stream._read_buffer_size = len(unread)
        super().handle_stream(stream, address)
