"""The live example page (/examples/live) in a real headless Chromium: the JavaScript client keeps
the posts feed and a product's stock current over WebSocket, across a server killed with SIGKILL
and restarted on the same data, and falls back to SSE and then long-poll when a transport is
refused. Each test compares what the page received with every event the server stored."""

import asyncio
import re

import pytest
import websockets
from pymongo import MongoClient

from tests.server_process import ServerProcess, http_json
from tests.test_docs_browser import CHROMIUM, Page, _open_chromium

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed "
                                "(Debian package chromium; .ci/run installs it)")


def stored_events(server: ServerProcess, channels: str) -> list[dict]:
    """Every stored event on `channels`, read back over long-poll page by page."""
    out, since = [], 0
    while True:
        status, _, body = http_json("GET", f"{server.base_url}/api/v1/poll?channels={channels}"
                                    f"&since={since}&timeout=0")
        assert status == 200, body
        if not body["events"]:
            return out
        out += body["events"]
        since = body["cursor"]


def create_posts(server: ServerProcess, token: str, first: int, count: int) -> None:
    for index in range(first, first + count):
        status, _, body = http_json("POST", f"{server.base_url}/api/v1/posts",
                                    {"title": f"post {index}", "content": "body"}, token)
        assert status == 201, body


class Browser:
    def __init__(self, tmp_path):
        self.tmp_path = tmp_path

    async def __aenter__(self) -> Page:
        self.process, page_url = await _open_chromium(self.tmp_path)
        self.ws = await websockets.connect(page_url, max_size=64 * 1024 * 1024)
        page = Page(self.ws)
        await page.call("Page.enable")
        return page

    async def __aexit__(self, *exc):
        await self.ws.close()
        self.process.terminate()
        await self.process.wait()


async def open_live(page: Page, base_url: str, query: str = "") -> dict:
    await page.call("Page.navigate", url=f"{base_url}/examples/live{query}")
    await page.wait_for("window.live && window.live.status && window.live.status.state === 'open'")
    return await page.js("window.live.status")


async def received_seqs(page: Page) -> list[int]:
    return await page.js("window.live.events.map(e => e.seq)")


async def wait_for_all(page: Page, expected: list[int]) -> None:
    await page.wait_for(f"window.live.events.length >= {len(expected)}", timeout=30)
    await asyncio.sleep(0.3)  # nothing more may come
    assert await received_seqs(page) == expected


@pytest.fixture
def live_server(mongodb_uri, db_name, tmp_path):
    """run.py as a process (so it can be killed), its own Origin allowed for WebSocket."""
    server = ServerProcess(mongodb_uri, db_name, tmp_path / "server")
    server.env["ALLOWED_ORIGINS"] = server.base_url
    yield server
    server.kill()


@pytest.mark.gen_test(timeout=180)
async def test_page_keeps_feed_and_stock_across_a_sigkill_restart(live_server, tmp_path):
    server = await asyncio.to_thread(live_server.start)
    admin = await asyncio.to_thread(server.create_admin)
    status, _, product = await asyncio.to_thread(
        http_json, "POST", f"{server.base_url}/api/v1/products",
        {"sku": "LIVE-1", "name": "Lamp", "category": "home", "price_cents": 1999,
         "stock": 10}, admin)
    assert status == 201, product
    async with Browser(tmp_path) as page:
        opened = await open_live(page, server.base_url, f"?product={product['id']}")
        assert opened["transport"] == "websocket"
        await asyncio.to_thread(create_posts, server, admin, 0, 10)
        for delta in (-1, -2, 5):
            status, _, _ = await asyncio.to_thread(
                http_json, "POST", f"{server.base_url}/api/v1/products/{product['id']}/stock",
                {"delta": delta}, admin)
            assert status == 200
        await page.wait_for("window.live.events.length >= 13")

        await asyncio.to_thread(server.kill)
        await page.wait_for("window.live.status.state === 'reconnecting'")
        await asyncio.to_thread(server.start)
        await asyncio.to_thread(create_posts, server, admin, 10, 10)
        status, _, _ = await asyncio.to_thread(
            http_json, "POST", f"{server.base_url}/api/v1/products/{product['id']}/stock",
            {"delta": -4}, admin)
        assert status == 200

        expected = [e["seq"] for e in await asyncio.to_thread(stored_events, server,
                                                              "posts,products")
                    if e["channel"] == "posts" or e["type"] == "product.stock_changed"]
        await wait_for_all(page, expected)
        assert await page.js("document.getElementById('stock').textContent") == "8"
        titles = await page.js("[...document.querySelectorAll('#posts strong')]"
                               ".map(e => e.textContent)")
        assert titles == [f"post {i}" for i in range(19, -1, -1)]
        assert (await page.js("window.live.status"))["transport"] == "websocket"
        assert await page.js("document.getElementById('status').textContent") == "live (websocket)"


def drop_events_before(server: ServerProcess, seq: int) -> None:
    """Retention passes while the server is down: events before `seq` leave the log."""
    with MongoClient(server.mongodb_uri, serverSelectionTimeoutMS=5000) as client:
        client[server.db_name]["events"].delete_many({"_id": {"$lt": seq}})


@pytest.mark.gen_test(timeout=120)
async def test_page_reloads_when_its_cursor_expired_while_away(live_server, tmp_path):
    server = await asyncio.to_thread(live_server.start)
    token = await asyncio.to_thread(server.create_admin)
    async with Browser(tmp_path) as page:
        await open_live(page, server.base_url)
        await asyncio.to_thread(create_posts, server, token, 0, 3)
        await page.wait_for("window.live.events.length === 3")
        # Comments move the log on without the page (it is not subscribed to post:{id}).
        post = (await asyncio.to_thread(stored_events, server, "posts"))[-1]["data"]
        for _ in range(3):
            status, _, _ = await asyncio.to_thread(
                http_json, "POST", f"{server.base_url}/api/v1/posts/{post['id']}/comments",
                {"body": "c"}, token)
            assert status == 201
        newest = (await asyncio.to_thread(stored_events, server, f"post:{post['id']}"))[-1]
        await asyncio.to_thread(server.kill)
        await asyncio.to_thread(drop_events_before, server, newest["seq"])
        await asyncio.to_thread(server.start)
        await page.wait_for("window.live.resets === 1")
        await page.wait_for("window.live.status.state === 'open'")
        await asyncio.to_thread(create_posts, server, token, 3, 1)
        await page.wait_for("document.querySelectorAll('#posts li').length === 4")
        titles = await page.js("[...document.querySelectorAll('#posts strong')]"
                               ".map(e => e.textContent)")
        assert titles == ["post 3", "post 2", "post 1", "post 0"]


@pytest.mark.gen_test(timeout=120)
async def test_page_falls_back_to_sse_when_the_origin_may_not_open_a_websocket(
        live_server, tmp_path):
    live_server.env["ALLOWED_ORIGINS"] = "https://app.example"
    server = await asyncio.to_thread(live_server.start)
    token = await asyncio.to_thread(server.create_admin)
    async with Browser(tmp_path) as page:
        opened = await open_live(page, server.base_url)
        assert opened["transport"] == "sse"
        await asyncio.to_thread(create_posts, server, token, 0, 10)
        expected = [e["seq"] for e in await asyncio.to_thread(stored_events, server, "posts")]
        await wait_for_all(page, expected)


class RefusingProxy:
    """A reverse proxy that answers WebSocket upgrades and event streams with 502, the way a
    proxy that cannot pass them does, and forwards everything else one request per connection."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.server = None
        self.tasks = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader, writer):
        self.tasks.add(asyncio.current_task())
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1]
            if path.startswith(b"/api/v1/stream") or b"\r\nupgrade: websocket" in head.lower():
                writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\n"
                             b"Content-Length: 12\r\nConnection: close\r\n\r\n<h1>502</h1>")
                await writer.drain()
                return
            head = re.sub(rb"(?im)^connection:[^\r\n]*\r\n", b"", head)
            head = head[:-2] + b"Connection: close\r\n\r\n"
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            up_writer.write(head)
            while chunk := await up_reader.read(65536):
                writer.write(chunk)
                await writer.drain()
            up_writer.close()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self.tasks.discard(asyncio.current_task())

    async def close(self):
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.mark.gen_test(timeout=120)
async def test_page_falls_back_to_long_poll_behind_a_proxy_that_refuses_ws_and_sse(
        live_server, tmp_path):
    server = await asyncio.to_thread(live_server.start)
    token = await asyncio.to_thread(server.create_admin)
    proxy = RefusingProxy(server.port)
    proxy_port = await proxy.start()
    try:
        async with Browser(tmp_path) as page:
            opened = await open_live(page, f"http://127.0.0.1:{proxy_port}")
            assert opened["transport"] == "poll"
            await asyncio.to_thread(create_posts, server, token, 0, 10)
            expected = [e["seq"] for e in await asyncio.to_thread(stored_events, server, "posts")]
            await wait_for_all(page, expected)
    finally:
        await proxy.close()
