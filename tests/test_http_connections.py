"""HTTP connections keep Nagle's algorithm off for their whole life (tornado_app/web/httpserver.py):
every answer is one write, and Tornado's turning it back on after each answer cost two system
calls per request."""

import asyncio
import socket

import pytest

from tornado_app.web.tornado_private import server_connections


async def _get_health(reader, writer) -> bytes:
    writer.write(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    await asyncio.wait_for(reader.readexactly(length), 10)
    return head


def _server_side_nodelay(server) -> list[int]:
    # The server's end of each open HTTP connection (the test's client holds the only one).
    return [conn.stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            for conn in server_connections(server.http)]


@pytest.mark.gen_test
async def test_nagle_stays_off_between_requests_on_a_kept_alive_connection(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        await _get_health(reader, writer)
        await asyncio.sleep(0.1)  # the answer's write has completed on the server's side too
        assert _server_side_nodelay(server) == [1]
    finally:
        writer.close()


@pytest.mark.gen_test
async def test_a_kept_alive_connection_answers_every_request(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        for _ in range(3):
            assert (await _get_health(reader, writer)).startswith(b"HTTP/1.1 200 ")
    finally:
        writer.close()
