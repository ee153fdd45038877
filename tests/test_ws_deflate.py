"""permessage-deflate (RFC 7692) on /api/v1/ws: the negotiation, compressed events for the
clients that asked and plain ones for those that did not, compressed client messages."""

import asyncio
import json
import zlib

import pytest
import websockets

from tests.realtime_helpers import WsClient, create_posts
from tests.test_ws_protocol import RawClient, client_frame, handshake
from tornado_app.realtime.deflate import deflate_message, negotiate

TAIL = b"\x00\x00\xff\xff"


def offer(value: str) -> bytes:
    return handshake(extra=f"Sec-WebSocket-Extensions: {value}\r\n")


def deflated(data: bytes, context=None) -> bytes:
    compressor = context or zlib.compressobj(6, zlib.DEFLATED, -15)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(TAIL)
    return out[:-4]


async def wire_frame(client: RawClient) -> tuple[bool, bytes]:
    """The next server frame as (RSV1 set, its payload as it came)."""
    first, second = await asyncio.wait_for(client.reader.readexactly(2), 5)
    length = second & 0x7F
    if length == 126:
        length = int.from_bytes(await client.reader.readexactly(2), "big")
    return bool(first & 0x40), await client.reader.readexactly(length)


async def compressed_frame(client: RawClient) -> tuple[bool, dict]:
    """The next server frame as (RSV1 set, the JSON it carries), inflated on its own."""
    rsv1, payload = await wire_frame(client)
    if rsv1:
        payload = zlib.decompressobj(-15).decompress(payload + TAIL)
    return rsv1, json.loads(payload)


class KeptContext:
    """The client's side when it keeps its context, as browsers do: one inflater for every
    message of the connection."""

    def __init__(self, client: RawClient):
        self.client = client
        self.inflater = zlib.decompressobj(-15)

    async def message(self) -> tuple[bytes, bytes]:
        """(the payload as it came, the message)."""
        rsv1, payload = await wire_frame(self.client)
        return payload, self.inflater.decompress(payload + TAIL) if rsv1 else payload


# --- the negotiation ---------------------------------------------------------------------------

@pytest.mark.gen_test
async def test_a_plain_offer_is_answered_without_conditions(server):
    """The client keeps its context (RFC 7692's default): events may refer back to the one
    before them."""
    client = await RawClient.open(server.port, offer("permessage-deflate"))
    assert client.status == 101
    assert client.header("Sec-WebSocket-Extensions") == "permessage-deflate"
    client.close()


@pytest.mark.gen_test
async def test_server_no_context_takeover_asked_for_is_granted(server):
    client = await RawClient.open(server.port, offer(
        "permessage-deflate; server_no_context_takeover"))
    assert client.header("Sec-WebSocket-Extensions") == \
        "permessage-deflate; server_no_context_takeover"
    client.close()


@pytest.mark.gen_test
async def test_offer_parameters_are_answered(server):
    client = await RawClient.open(server.port, offer(
        "permessage-deflate; client_no_context_takeover; server_max_window_bits=10; "
        "client_max_window_bits"))
    assert client.header("Sec-WebSocket-Extensions") == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
        "server_max_window_bits=10; client_max_window_bits=11")
    client.close()


@pytest.mark.gen_test
async def test_no_offer_no_extension_answered(server):
    client = await RawClient.open(server.port, handshake())
    assert client.status == 101 and client.header("Sec-WebSocket-Extensions") is None
    client.close()


@pytest.mark.gen_test
async def test_an_invalid_offer_is_declined_and_the_next_one_accepted(server):
    client = await RawClient.open(server.port, offer(
        "permessage-deflate; server_max_window_bits=16, x-webkit-deflate-frame, "
        "permessage-deflate; client_no_context_takeover"))
    assert client.status == 101
    assert client.header("Sec-WebSocket-Extensions") == \
        "permessage-deflate; client_no_context_takeover"
    client.close()


@pytest.mark.parametrize("value", [
    "permessage-deflate; server_max_window_bits=7",
    "permessage-deflate; server_max_window_bits",
    "permessage-deflate; client_max_window_bits=08",
    "permessage-deflate; server_no_context_takeover=1",
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    "permessage-deflate; mystery",
    "x-webkit-deflate-frame",
])
def test_offers_declined_per_rfc_7692(value):
    assert negotiate([value]) == (None, None)


def test_a_full_server_window_asked_for_is_answered():
    _, answer = negotiate(["permessage-deflate; server_max_window_bits=15"])
    assert answer == "permessage-deflate; server_max_window_bits=15"


def test_a_smaller_server_window_is_answered_with_no_context_takeover():
    """Events then go compressed on their own (one frame per window size)."""
    deflate, answer = negotiate(["permessage-deflate; server_max_window_bits=12"])
    assert answer == "permessage-deflate; server_no_context_takeover; server_max_window_bits=12"
    assert not deflate.server_context


def test_a_quoted_window_size_is_a_value():
    deflate, answer = negotiate(['permessage-deflate; server_max_window_bits="9"'])
    assert deflate.server_bits == 9 and answer.endswith("server_max_window_bits=9")


class TestCompressionOff:
    @pytest.fixture
    def settings_overrides(self):
        return {"ws_compression": False}

    @pytest.mark.gen_test
    async def test_no_extension_is_answered(self, server):
        client = await RawClient.open(server.port, offer("permessage-deflate"))
        assert client.status == 101 and client.header("Sec-WebSocket-Extensions") is None
        client.close()


# --- events ------------------------------------------------------------------------------------

@pytest.mark.gen_test
async def test_websockets_library_receives_a_compressed_event(api, server):
    token = await api.user_token("alice")
    async with websockets.connect(f"ws://127.0.0.1:{server.port}/api/v1/ws",
                                  compression="deflate") as ws:
        assert ws.response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
        await ws.send(json.dumps({"op": "subscribe", "channels": ["posts"], "ref": 1}))
        assert json.loads(await ws.recv())["type"] == "subscribed"
        await create_posts(api, token, 1)
        event = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert event["type"] == "event" and event["event"]["type"] == "post.created"


@pytest.mark.gen_test
async def test_plain_and_compressed_subscribers_get_the_same_event(api, server):
    token = await api.user_token("alice")
    plain = await WsClient.connect(server.port)
    await plain.subscribe(["posts"])
    compressed = await RawClient.open(server.port, offer("permessage-deflate"))
    compressed.send(client_frame(0x1, b'{"op":"subscribe","channels":["posts"]}'))
    assert (await compressed_frame(compressed))[1]["type"] == "subscribed"
    post = {"title": "compressible", "content": "words " * 50}
    response = await api.post("/api/v1/posts", post, token=token)
    assert response.code == 201
    rsv1, event = await compressed_frame(compressed)
    [plain_event] = await plain.events(1)
    assert rsv1
    assert event["event"] == plain_event
    plain.close()
    compressed.close()


def _long_data(n: int) -> dict:
    return {"n": n, "text": "a post that shares its words with the one before it " * 4}


async def _stream_subscriber(server, extensions: str, channels: list) -> RawClient:
    client = await RawClient.open(server.port, offer(extensions))
    client.send(client_frame(0x1, json.dumps({"op": "subscribe", "channels": channels}).encode()))
    return client


@pytest.mark.gen_test
async def test_a_peer_that_keeps_its_context_gets_events_deflated_after_the_one_before(server):
    client = await _stream_subscriber(server, "permessage-deflate", ["posts"])
    peer = KeptContext(client)
    _, ack = await peer.message()
    assert json.loads(ack)["type"] == "subscribed"
    for n in range(4):
        await server.ctx.events.publish("posts", "test.event", _long_data(n))
    for n in range(4):
        wire, message = await peer.message()
        assert json.loads(message)["event"]["data"] == _long_data(n)
        alone = deflate_message(message)
        if n == 0:
            assert wire == alone  # nothing before it in this peer's window
        else:
            assert len(wire) < len(alone)  # back-references into the event before it
    client.close()


@pytest.mark.gen_test
async def test_events_of_two_channels_in_turn_inflate_for_a_peer_that_keeps_its_context(server):
    """Each event refers back only to the one before it on its own channel, and only when the
    peer inflated that one last; otherwise it goes on its own."""
    other = "post:" + "ab" * 12
    client = await _stream_subscriber(server, "permessage-deflate", ["posts", other])
    peer = KeptContext(client)
    await peer.message()  # subscribed
    order = ["posts", other, "posts", "posts", other, other]
    for n, channel in enumerate(order):
        await server.ctx.events.publish(channel, "test.event", _long_data(n))
    for n, channel in enumerate(order):
        _, message = await peer.message()
        event = json.loads(message)["event"]
        assert (event["channel"], event["data"]) == (channel, _long_data(n))
    client.close()


@pytest.mark.gen_test
async def test_a_peer_that_asked_for_no_context_takeover_gets_each_event_on_its_own(server):
    client = await _stream_subscriber(
        server, "permessage-deflate; server_no_context_takeover", ["posts"])
    assert (await compressed_frame(client))[1]["type"] == "subscribed"
    for n in range(3):
        await server.ctx.events.publish("posts", "test.event", _long_data(n))
    for n in range(3):
        rsv1, event = await compressed_frame(client)  # a fresh inflater each time
        assert rsv1 and event["event"]["data"] == _long_data(n)
    client.close()


@pytest.mark.gen_test
async def test_a_reply_compressed_between_two_events_sends_the_next_event_on_its_own(server):
    """A reply of the connection's own (compressed on its own) ends the peer's window: the
    next event cannot refer back past it."""
    client = await _stream_subscriber(server, "permessage-deflate", ["posts"])
    peer = KeptContext(client)
    await peer.message()  # subscribed
    await server.ctx.events.publish("posts", "test.event", _long_data(0))
    await peer.message()
    long_ref = "r" * 300  # echoed in the reply, which is then long enough to be compressed
    client.send(client_frame(0x1, json.dumps({"op": "unsubscribe", "channels": ["nothing"],
                                              "ref": long_ref}).encode()))
    wire, reply = await peer.message()
    assert json.loads(reply)["ref"] == long_ref and wire != reply
    await server.ctx.events.publish("posts", "test.event", _long_data(1))
    wire, message = await peer.message()
    assert json.loads(message)["event"]["data"] == _long_data(1)
    assert wire == deflate_message(message)
    client.close()


@pytest.mark.gen_test
async def test_websockets_library_inflates_a_stream_of_events(api, server):
    """A real client library that keeps its context, as browsers do."""
    token = await api.user_token("alice")
    async with websockets.connect(f"ws://127.0.0.1:{server.port}/api/v1/ws",
                                  compression="deflate") as ws:
        assert "server_no_context_takeover" not in ws.response.headers["Sec-WebSocket-Extensions"]
        await ws.send(json.dumps({"op": "subscribe", "channels": ["posts"], "ref": 1}))
        assert json.loads(await ws.recv())["type"] == "subscribed"
        await create_posts(api, token, 5, prefix="a post that keeps its words")
        for index in range(5):
            event = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert event["event"]["data"]["title"] == f"a post that keeps its words {index}"


@pytest.mark.gen_test
async def test_a_compressed_client_message_is_inflated(server):
    client = await RawClient.open(server.port, offer("permessage-deflate"))
    client.send(client_frame(0x1, deflated(b'{"op":"ping","ref":"small"}'), rsv=0x40))
    assert (await compressed_frame(client))[1] == {"type": "pong", "ref": "small"}
    client.close()


@pytest.mark.gen_test
async def test_a_client_that_keeps_its_context_refers_to_its_earlier_message(server):
    client = await RawClient.open(server.port, offer("permessage-deflate"))
    context = zlib.compressobj(6, zlib.DEFLATED, -15)
    ping = b'{"op":"ping","ref":"again and again"}'
    client.send(client_frame(0x1, deflated(ping, context), rsv=0x40))
    second = deflated(ping, context)  # mostly one back-reference into the first message
    assert len(second) < len(ping) // 2
    client.send(client_frame(0x1, second, rsv=0x40))
    for _ in range(2):
        assert (await compressed_frame(client))[1] == {"type": "pong", "ref": "again and again"}
    client.close()


@pytest.mark.gen_test
async def test_a_fragmented_compressed_message_is_inflated(server):
    client = await RawClient.open(server.port, offer("permessage-deflate"))
    data = deflated(b'{"op":"ping","ref":"in parts"}')
    client.send(client_frame(0x1, data[:4], fin=False, rsv=0x40))
    client.send(client_frame(0x0, data[4:]))
    assert (await compressed_frame(client))[1] == {"type": "pong", "ref": "in parts"}
    client.close()


@pytest.mark.gen_test
@pytest.mark.parametrize("frame", [
    client_frame(0x9, b"", rsv=0x40),                              # a control frame
    client_frame(0x1, b"x", rsv=0x20),                             # RSV2
])
async def test_reserved_bits_the_extension_does_not_define_fail_with_1002(server, frame):
    client = await RawClient.open(server.port, offer("permessage-deflate"))
    client.send(frame)
    assert await client.close_code() == 1002
    client.close()


@pytest.mark.gen_test
async def test_rsv1_on_a_continuation_frame_fails_with_1002(server):
    client = await RawClient.open(server.port, offer("permessage-deflate"))
    client.send(client_frame(0x1, b"{", fin=False))
    client.send(client_frame(0x0, b"}", rsv=0x40))
    assert await client.close_code() == 1002
    client.close()


@pytest.mark.gen_test
async def test_data_that_does_not_inflate_fails_with_1007(server):
    client = await RawClient.open(server.port, offer("permessage-deflate"))
    client.send(client_frame(0x1, b"\xff\xff\xff\xff", rsv=0x40))
    assert await client.close_code() == 1007
    client.close()


class TestBomb:
    @pytest.fixture
    def settings_overrides(self):
        return {"ws_max_message_bytes": 4096}

    @pytest.mark.gen_test
    async def test_a_message_inflating_past_the_limit_closes_with_1009(self, server):
        client = await RawClient.open(server.port, offer("permessage-deflate"))
        bomb = deflated(b"[" + b" " * 10_000_000 + b"]")  # 10 MB in about 10 KB
        assert len(bomb) < 4096 * 4
        client.send(client_frame(0x1, bomb[:4000], fin=False, rsv=0x40))
        client.send(client_frame(0x0, b""))
        assert await client.close_code() == 1009
        client.close()

    @pytest.mark.gen_test
    async def test_the_websockets_library_is_closed_with_1009(self, server):
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/api/v1/ws",
                                      compression="deflate", max_size=None) as ws:
            await ws.send(json.dumps({"op": "ping", "ref": "x" * 100_000}))
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1009


# --- one compression per event (pure pieces) ---------------------------------------------------

def _record(content: str):
    from tornado_app.realtime.record import Record
    return Record({"seq": 1, "channel": "posts", "type": "post.created",
                   "data": {"content": content}})


def _payload(frame: bytes) -> bytes:
    assert frame[0] & 0x40  # RSV1
    return frame[2:] if frame[1] & 0x7F < 126 else frame[4:]


def _inflate(frame: bytes, bits: int) -> bytes:
    return zlib.decompressobj(-bits).decompress(_payload(frame) + TAIL)


def test_an_event_deflated_after_the_one_before_inflates_in_a_kept_window():
    earlier, later = _record("the same words again and again " * 10), _record("the same words")
    later.previous = earlier.json
    inflater = zlib.decompressobj(-15)
    inflater.decompress(_payload(earlier.frame_for(negotiate(["permessage-deflate"])[0])) + TAIL)
    frame = later.frame_after(earlier.json)
    assert frame is later.frame_after(earlier.json)  # made once for every such peer
    assert inflater.decompress(_payload(frame) + TAIL) == later.message


def test_no_frame_after_a_message_that_was_not_the_one_before():
    earlier, later = _record("one"), _record("two")
    later.previous = earlier.json
    assert later.frame_after(None) is None
    assert later.frame_after(_record("one").json) is None  # equal bytes, another event


def test_every_compressed_subscriber_gets_the_same_bytes():
    record = _record("the same words again and again " * 10)
    first, _ = negotiate(["permessage-deflate"])
    second, _ = negotiate(["permessage-deflate; client_no_context_takeover"])
    assert record.frame_for(first) is record.frame_for(second)
    assert _inflate(record.frame_for(first), 15) == record.frame[4:]


def test_a_peer_with_a_small_window_gets_an_event_longer_than_it_deflated_for_that_window():
    record = _record("".join(f"{n:x} words " for n in range(200)))
    small, _ = negotiate(["permessage-deflate; server_max_window_bits=9"])
    full, _ = negotiate(["permessage-deflate"])
    frame = record.frame_for(small)
    assert frame is not record.frame_for(full)
    assert _inflate(frame, 9) == record.frame[4:]


def test_an_event_shorter_than_a_small_window_shares_the_full_window_frame():
    record = _record("short and short and short")
    small, _ = negotiate(["permessage-deflate; server_max_window_bits=9"])
    full, _ = negotiate(["permessage-deflate"])
    assert record.frame_for(small) is record.frame_for(full)
