"""ALLOWED_ORIGINS reaches the SSE stream too (README "Cross-origin access"): a page on an allowed
origin may read an EventSource stream; another origin's page gets the stream without the header,
so the browser withholds it."""

import pytest
from tornado.iostream import IOStream
from tornado.tcpclient import TCPClient

ALLOWED = "https://app.example.com"


@pytest.fixture
def settings_overrides():
    return {"allowed_origins": [ALLOWED]}


async def _stream_head(port: int, origin: str) -> dict:
    stream: IOStream = await TCPClient().connect("127.0.0.1", port)
    try:
        await stream.write(b"GET /api/v1/stream?channels=posts HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           b"Accept: text/event-stream\r\nOrigin: " + origin.encode()
                           + b"\r\n\r\n")
        head = (await stream.read_until(b"\r\n\r\n", max_bytes=65536)).decode("latin1")
    finally:
        stream.close()
    status, *lines = head.strip().split("\r\n")
    assert status == "HTTP/1.1 200 OK"
    return dict(line.split(": ", 1) for line in lines)


@pytest.mark.gen_test
async def test_an_allowed_origin_may_read_the_event_stream(server):
    headers = await _stream_head(server.port, ALLOWED)
    assert headers["Content-Type"].startswith("text/event-stream")
    assert headers["Access-Control-Allow-Origin"] == ALLOWED
    assert "Origin" in headers["Vary"]


@pytest.mark.gen_test
async def test_another_origin_gets_the_stream_without_the_header(server):
    headers = await _stream_head(server.port, "https://evil.example.com")
    assert "Access-Control-Allow-Origin" not in headers
