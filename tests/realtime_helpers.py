"""Helpers for realtime tests: real WebSocket clients and plain HTTP for long-poll and SSE."""

import asyncio
import json

from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect


async def wait_until(predicate, timeout: float = 5.0) -> None:
    """Waits for a condition on the server's state (the clients cannot see it)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


class WsClient:
    """Tornado's own WebSocket client, reading JSON frames."""

    def __init__(self, conn):
        self.conn = conn

    @classmethod
    async def connect(cls, port: int, token: str | None = None, headers: dict | None = None,
                      query: str = ""):
        all_headers = dict(headers or {})
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        request = HTTPRequest(f"ws://127.0.0.1:{port}/api/v1/ws{query}", headers=all_headers)
        return cls(await websocket_connect(request, max_message_size=16 * 1024 * 1024))

    async def send(self, payload: dict) -> None:
        await self.conn.write_message(json.dumps(payload))

    async def recv(self, timeout: float = 5.0):
        message = await asyncio.wait_for(self.conn.read_message(), timeout)
        return None if message is None else json.loads(message)

    async def recv_until(self, kind: str, timeout: float = 5.0):
        while True:
            message = await self.recv(timeout)
            if message is None or message.get("type") == kind:
                return message

    async def subscribe(self, channels, since=None, ref=1):
        payload = {"op": "subscribe", "channels": channels, "ref": ref}
        if since is not None:
            payload["since"] = since
        await self.send(payload)
        reply = await self.recv()
        assert reply["type"] == "subscribed", reply
        return reply

    async def events(self, count: int, timeout: float = 10.0) -> list[dict]:
        out = []
        while len(out) < count:
            message = await self.recv(timeout)
            assert message is not None, f"closed after {len(out)} of {count} events"
            if message["type"] == "event":
                out.append(message["event"])
        return out

    def close(self):
        self.conn.close()


async def create_posts(api, token: str, count: int, prefix: str = "post"):
    for index in range(count):
        response = await api.post("/api/v1/posts", {"title": f"{prefix} {index}",
                                                    "content": "body"}, token=token)
        assert response.code == 201, response.body


async def publish(server, channel: str, count: int, type_: str = "test.event") -> list[dict]:
    return [await server.ctx.events.publish(channel, type_, {"n": index})
            for index in range(count)]


async def expire_events(server, up_to: int) -> None:
    """Events 1..up_to pass retention: gone from the log, then the server's own maintenance pass
    (which also drops them from the hub's in-memory window)."""
    await server.ctx.db["events"].delete_many({"_id": {"$lte": up_to}})
    await server.purge_expired()


async def user_with_id(api, name: str) -> tuple[str, str]:
    user = await api.register(name)
    return user["id"], (await api.login(name))["access_token"]


def hand_out_per_turn(monkeypatch, count: int) -> None:
    """Makes the hub's fan-out hand over to `count` subscribers per turn of the loop, however
    fast they are: a pass then spans several turns, as one over 15,000 subscribers does."""
    monkeypatch.setattr("tornado_app.realtime.hub.FANOUT_BATCH", count)
    monkeypatch.setattr("tornado_app.realtime.hub.FANOUT_SLICE", 0.0)
    monkeypatch.setattr("tornado_app.realtime.hub.FANOUT_SLICE_MAX", 0.0)
