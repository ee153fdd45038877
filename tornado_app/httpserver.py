"""The HTTP server with a cap on open connections, refused cleanly rather than by running out
of file descriptors."""

import json
import uuid

from tornado.httpserver import HTTPServer


def _refusal() -> bytes:
    body = json.dumps({"error": {"code": "service_unavailable",
                                 "message": "too many open connections, try again shortly"}})
    return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Retry-After: 5\r\nConnection: close\r\nX-Request-ID: %s\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (uuid.uuid4().hex.encode(), len(body), body.encode()))


class CappedHTTPServer(HTTPServer):
    def initialize(self, *args, max_connections: int, open_websockets, **kwargs) -> None:
        super().initialize(*args, **kwargs)
        self.max_connections = max_connections
        # Upgraded WebSockets leave the HTTP server's own bookkeeping, so they are counted apart.
        self.open_websockets = open_websockets
        self.refused = 0

    def handle_stream(self, stream, address) -> None:
        if len(self._connections) + len(self.open_websockets) >= self.max_connections:
            self.refused += 1
            stream.write(_refusal()).add_done_callback(lambda _: stream.close())
            return
        super().handle_stream(stream, address)
