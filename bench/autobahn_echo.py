"""An echo server on our WebSocket frame layer (tornado_app.realtime.websocket), for the Autobahn
TestSuite cases as the `kosoku` package drives them: every message comes back as it came, text
or binary, compressed when permessage-deflate was negotiated.

    python -m bench.autobahn_echo --port 9001
    kosoku -i '12.*' -i '13.*' 127.0.0.1:9001
"""

import argparse
import asyncio
import socket

from tornado_app.realtime.deflate import negotiate
from tornado_app.realtime.websocket import OP_BINARY, OP_TEXT, WebSocketConnection, accept_key

# Autobahn's largest messages (9.*) are 16 MB; its echo cases send a whole message back.
MAX_MESSAGE = 64 * 1024 * 1024
MAX_PENDING = 256 * 1024 * 1024


class Echo(WebSocketConnection):
    __slots__ = ()

    def on_message(self, message):
        if isinstance(message, str):
            self.send_message(OP_TEXT, message.encode("utf-8"))
        else:
            self.send_message(OP_BINARY, message)

    def on_backpressure(self) -> None:
        pass  # an echo server holds what the peer has not read yet


def _headers(head: bytes) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        out.setdefault(name.strip().lower(), []).append(value.strip())
    return out


async def _serve(sock: socket.socket, compression: bool) -> None:
    loop = asyncio.get_running_loop()
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await loop.sock_recv(sock, 65536)
        if not chunk or len(data) > 65536:
            sock.close()
            return
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    headers = _headers(head)
    key = (headers.get("sec-websocket-key") or [""])[0]
    deflate, answer = (negotiate(headers.get("sec-websocket-extensions", []))
                       if compression else (None, None))
    extra = f"Sec-WebSocket-Extensions: {answer}\r\n" if answer else ""
    response = (f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept_key(key)}\r\n{extra}\r\n").encode()
    Echo(sock, MAX_MESSAGE, MAX_PENDING, deflate).start(response, rest)


async def main(port: int, compression: bool = True) -> None:
    loop = asyncio.get_running_loop()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    listener.setblocking(False)
    try:
        while True:
            sock, _ = await loop.sock_accept(listener)
            sock.setblocking(False)
            loop.create_task(_serve(sock, compression))
    finally:
        listener.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--no-compression", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.port, not args.no_compression))
