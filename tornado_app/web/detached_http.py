"""Requests whose connection is taken away from Tornado: parked long-polls, WebSocket upgrades.

A long-poll that waits holds nothing but its socket and the bytes of its answer's head; the
answer is written straight to the socket later, and the connection goes back to the HTTP server
(tornado_app/web/httpserver.py) for its next request. What is built here must match, byte for
byte, what RequestHandler.finish and HTTP1Connection.write_headers would have written.
"""

from tornado import httputil

from .tornado_private import abandon, break_cycles, keeps_alive, response_headers

# What follows Content-Length: the end of the head, after the Connection header Tornado adds
# when the connection will close (HTTP/1.1) or stays open on request (HTTP/1.0).
END_OF_HEAD = b"\r\n"
CLOSE_AT_END = b"Connection: close\r\n\r\n"
KEEP_ALIVE_1_0_AT_END = b"Connection: Keep-Alive\r\n\r\n"


def response_head(handler) -> tuple[bytes, bytes, bool]:
    """(the head up to Content-Length, the rest of it, whether the connection stays open) of the
    answer `handler` would send now with a body."""
    status = handler.get_status()
    lines = [b"HTTP/1.1 %d %s" % (status, httputil.responses[status].encode())]
    lines += [f"{name}: {value}".encode("latin1")
              for name, value in response_headers(handler).get_all()]
    request = handler.request
    keep_alive = keeps_alive(request.connection)
    if request.version == "HTTP/1.1" and not keep_alive:
        end = CLOSE_AT_END
    elif (request.version == "HTTP/1.0"
          and request.headers.get("Connection", "").lower() == "keep-alive"):
        end = KEEP_ALIVE_1_0_AT_END
    else:
        end = END_OF_HEAD
    return b"\r\n".join(lines) + b"\r\n", end, keep_alive


def take_socket(handler):
    """Ends Tornado's part in `handler`'s request and returns (its socket, the bytes Tornado had
    already read past the request: a pipelined next request, usually none).

    Nothing of Tornado's (handler, request, connection, stream) stays referenced, and the
    abandoned IOStream can never close or watch the socket.
    """
    # Out of the HTTP server's connection count at once (tornado_app/web/httpserver.py).
    release = getattr(handler.request.server_connection, "release", None)
    if release is not None:
        release()
    stream = handler.detach()
    # detach() skips what finish() would do last: BaseHandler counts requests in flight in
    # on_finish, and the handler's cycles would otherwise wait for the collector.
    handler.on_finish()
    break_cycles(handler)
    return abandon(stream)
