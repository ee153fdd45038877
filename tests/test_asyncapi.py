"""GET /asyncapi.json: an AsyncAPI 3 document of the realtime protocol, valid by the AsyncAPI
project's own parser, naming every op, frame, SSE message and event type; and everything a running
server emits in a session that exercises all of them is in it, and fits its models."""

import json
import shutil
import subprocess

import pytest
from pydantic import TypeAdapter

from tests.realtime_helpers import WsClient, user_with_id
from tests.test_js_client import JS
from tests.test_sse import SseClient
from tornado_app.web.asyncapi import CLIENT_OPS, SERVER_FRAMES, SSE_MESSAGES
from tornado_app.schemas.notifications import PollResponse
from tornado_app.schemas.realtime import CHANNELS, ClientOp, Event, ServerFrame, event_type

EVENT_TYPES = {event_type(model) for _, models in CHANNELS.values() for model in models}


@pytest.fixture
def document(api, io_loop):
    response = io_loop.run_sync(lambda: api.get("/asyncapi.json"))
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    return response.json


def test_document_is_valid_by_the_asyncapi_parser(document, tmp_path):
    node = shutil.which("node")
    assert node, "Node.js is required (Debian package nodejs)"
    assert (JS / "node_modules" / "@asyncapi" / "parser").is_dir(), \
        "run `npm ci` in clients/js (make test-tools does)"
    path = tmp_path / "asyncapi.json"
    path.write_text(json.dumps(document))
    done = subprocess.run([node, "tools/validate-asyncapi.mjs", str(path)], cwd=JS,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [d for d in json.loads(done.stdout) if d["severity"] == 0] == []


def test_servers_are_where_the_document_was_fetched_from(document, server):
    assert document["servers"]["websocket"] == {
        **document["servers"]["websocket"], "host": f"127.0.0.1:{server.port}", "protocol": "ws"}
    assert document["servers"]["http"]["host"] == f"127.0.0.1:{server.port}"


def test_document_names_every_transport_op_frame_and_event_type(document):
    assert document["asyncapi"].startswith("3.")
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert {"/api/v1/ws", "/api/v1/stream", "/api/v1/poll", *CHANNELS} <= addresses
    ws = document["channels"]["websocket"]["messages"]
    assert {m.removeprefix("op.") for m in ws if m.startswith("op.")} == {
        "subscribe", "unsubscribe", "ping", "auth"}
    assert {m.removeprefix("frame.") for m in ws if m.startswith("frame.")} == {
        "subscribed", "unsubscribed", "event", "pong", "authenticated", "error"}
    assert EVENT_TYPES == {"post.created", "post.updated", "post.deleted", "comment.created",
                           "comment.deleted", "product.created", "product.updated",
                           "product.stock_changed", "product.deleted", "notification"}
    assert EVENT_TYPES <= set(document["channels"]["stream"]["messages"])
    assert EVENT_TYPES <= set(document["components"]["messages"])


def test_docs_page_links_the_asyncapi_document(api, io_loop):
    openapi = io_loop.run_sync(lambda: api.get("/openapi.json")).json
    assert "/asyncapi.json" in openapi["info"]["description"]
    page = io_loop.run_sync(lambda: api.http.fetch(api.base_url + "/docs"))
    assert b'href="/asyncapi.json"' in page.body


async def _every_event_type(api, server, alice_id: str) -> None:
    """One change of every kind, so that every event type is published."""
    admin = await api.admin_token(server)
    post = (await api.post("/api/v1/posts", {"title": "t", "content": "c"}, token=admin)).json
    await api.patch(f"/api/v1/posts/{post['id']}", {"title": "t2"}, token=admin)
    comment = (await api.post(f"/api/v1/posts/{post['id']}/comments", {"body": "b"},
                              token=admin)).json
    await api.delete(f"/api/v1/comments/{comment['id']}", token=admin)
    await api.delete(f"/api/v1/posts/{post['id']}", token=admin)
    product = (await api.post("/api/v1/products", {
        "sku": "SKU-1", "name": "n", "category": "c", "price_cents": 1, "stock": 1},
        token=admin)).json
    await api.patch(f"/api/v1/products/{product['id']}", {"name": "n2"}, token=admin)
    await api.post(f"/api/v1/products/{product['id']}/stock", {"delta": 2}, token=admin)
    await api.delete(f"/api/v1/products/{product['id']}", token=admin)
    response = await api.post("/api/v1/notifications", {
        "user_id": alice_id, "title": "hi", "body": "there"}, token=admin)
    assert response.code == 202
    return post["id"]


@pytest.mark.gen_test(timeout=60)
async def test_everything_a_server_emits_is_in_the_document_and_fits_its_models(
        api, server, document):
    alice_id, alice = await user_with_id(api, "alice")
    ws = await WsClient.connect(server.port)
    sent_ops, frames = [], []

    async def op(payload, answer):
        sent_ops.append(TypeAdapter(ClientOp).validate_python(payload).op)
        await ws.send(payload)
        while True:  # events may come before the answer: every frame is kept
            frame = await ws.recv()
            frames.append(frame)
            if frame["type"] == answer:
                return frame

    await op({"op": "auth", "token": alice, "ref": 1}, "authenticated")
    await op({"op": "subscribe", "channels": ["posts", "products", f"user:{alice_id}"],
              "since": 0, "ref": 2}, "subscribed")
    await op({"op": "ping", "ref": 3}, "pong")
    await op({"op": "subscribe", "channels": ["user:" + "0" * 24], "ref": 4}, "error")
    post_id = await _every_event_type(api, server, alice_id)
    await op({"op": "subscribe", "channels": [f"post:{post_id}"], "since": 0, "ref": 5},
             "subscribed")
    while {f["event"]["type"] for f in frames if f["type"] == "event"} != EVENT_TYPES:
        frames.append(await ws.recv())
    await op({"op": "unsubscribe", "channels": ["posts"], "ref": 6}, "unsubscribed")
    ws.close()

    for frame in frames:
        TypeAdapter(ServerFrame).validate_python(frame)
    assert {f["type"] for f in frames} == set(SERVER_FRAMES)
    assert set(sent_ops) == set(CLIENT_OPS)
    ws_messages = document["channels"]["websocket"]["messages"]
    assert {f"frame.{f['type']}" for f in frames} <= set(ws_messages)

    channels = f"posts,products,post:{post_id},user:{alice_id}"
    stream = await SseClient.open(server.port, f"?channels={channels}&since=0", token=alice)
    names = set()
    try:
        while names & EVENT_TYPES != EVENT_TYPES:
            message = await stream.next()
            names.add(message["event"])
            payload = json.loads(message["data"])
            if message["event"] in SSE_MESSAGES:
                SSE_MESSAGES[message["event"]].model_validate(payload)
            else:
                event = TypeAdapter(Event).validate_python(payload)
                assert message["event"] == event.type and message["id"] == str(event.seq)
    finally:
        await stream.close()
    assert names <= set(document["channels"]["stream"]["messages"]) | {
        f"sse.{name}" for name in names if name in SSE_MESSAGES}

    answer = (await api.get(f"/api/v1/poll?channels={channels}&since=0&timeout=0",
                            token=alice)).json
    PollResponse.model_validate(answer)
    poll_schema = document["components"]["schemas"]["PollResponse"]
    assert set(answer) <= set(poll_schema["properties"])
    assert {e["type"] for e in answer["events"]} == EVENT_TYPES
    for event in answer["events"]:
        TypeAdapter(Event).validate_python(event)
