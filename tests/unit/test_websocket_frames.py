"""The WebSocket frame layer (tornado_app/realtime/websocket.py), RFC 6455 byte by byte: a
connection on one end of a socketpair, the test writing client frames into the other end and
reading back what the server sent. No server, no handshake."""

import asyncio
import select
import socket

import pytest

from tests.unit.frames import Frame, client_frame, close_payload, parse_server_frames
from tornado_app.realtime import websocket
from tornado_app.realtime.websocket import (CLOSED, OP_BINARY, OP_CLOSE, OP_CONTINUATION,
                                            OP_PING, OP_PONG, OP_TEXT, WebSocketConnection,
                                            accept_key, close_frame, server_frame, valid_key)

MAX_MESSAGE = 1024


class Connection(WebSocketConnection):
    """Keeps the messages it gets; `handler` may replace what a message does."""

    __slots__ = ("messages", "closed", "handler")

    def __init__(self, sock, max_message=MAX_MESSAGE, max_pending=1 << 20):
        super().__init__(sock, max_message, max_pending)
        self.messages = []
        self.closed = False
        self.handler = None

    def on_message(self, message):
        if self.handler is not None:
            return self.handler(message)
        self.messages.append(message)
        return None

    def on_closed(self) -> None:
        self.closed = True


class Peer:
    """The client's end of the socketpair."""

    def __init__(self, sock: socket.socket, conn: Connection):
        self.sock = sock
        self.conn = conn
        self.eof = False

    def send(self, data: bytes, chunk: int | None = None) -> None:
        """Writes `data` (in pieces of `chunk` bytes, each read on its own) and lets the
        connection read it all, as its reader callback on the loop would."""
        parts = [data] if chunk is None else [data[i:i + chunk] for i in range(0, len(data), chunk)]
        for part in parts:
            self.sock.sendall(part)
            while self.conn.state != CLOSED and select.select([self.conn.sock], [], [], 0)[0]:
                self.conn._on_readable()

    def received(self) -> list[Frame]:
        """Every frame the server has sent so far (and whether it then closed TCP: `eof`)."""
        data = b""
        while True:
            try:
                chunk = self.sock.recv(1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                self.eof = True
                break
            data += chunk
        return parse_server_frames(data)


@pytest.fixture
def pair():
    server_end, client_end = socket.socketpair()
    for end in (server_end, client_end):
        end.setblocking(False)
    yield server_end, client_end
    for end in (server_end, client_end):
        end.close()


@pytest.fixture
def open_connection(pair):
    """open_connection(**kw) → (connection, peer); call it inside the test's loop."""
    def make(**kwargs):
        conn = Connection(pair[0], **kwargs)
        return conn, Peer(pair[1], conn)
    return make


def assert_failed(peer: Peer, code: int) -> None:
    """The connection was failed: a close frame with `code`, then TCP closed by the server."""
    frames = peer.received()
    assert [frame.opcode for frame in frames] == [OP_CLOSE], frames
    assert frames[0].code == code
    assert peer.eof and peer.conn.closed


# --- the handshake's key and the server's frames ---------------------------------------------------

def test_accept_key_is_the_rfcs_example():
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("key, valid", [
    ("dGhlIHNhbXBsZSBub25jZQ==", True),
    (None, False), ("", False),
    ("dGhlIHNhbXBsZSBub25j", False),  # 15 bytes
    ("dGhlIHNhbXBsZSBub25jZQ1=", False),  # 17 bytes
    ("not base64 at all!!!!!==", False),
    ("dGhlIHNhbXBsZSBub25jZQé=", False),
])
def test_a_key_is_16_bytes_of_base64(key, valid):
    assert valid_key(key) is valid


@pytest.mark.parametrize("length, header", [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)])
def test_a_server_frame_uses_the_shortest_length_that_fits(length, header):
    frame = server_frame(OP_BINARY, b"x" * length)
    assert len(frame) == header + length
    [parsed] = parse_server_frames(frame)
    assert (parsed.fin, parsed.rsv, parsed.opcode) == (True, 0, OP_BINARY)
    assert len(parsed.payload) == length


def test_a_close_frames_reason_is_cut_to_fit_a_control_frame_on_a_character_boundary():
    [frame] = parse_server_frames(close_frame(1001, "é" * 100))
    assert frame.code == 1001
    assert len(frame.payload) <= 125
    assert frame.payload[2:].decode("utf-8") == "é" * 61


# --- messages ----------------------------------------------------------------------------------

@pytest.mark.gen_test
async def test_a_masked_text_frame_is_a_text_message(open_connection):
    conn, peer = open_connection()
    peer.send(client_frame(OP_TEXT, "héllo".encode()))
    assert conn.messages == ["héllo"]


@pytest.mark.gen_test
async def test_a_binary_frame_is_a_bytes_message(open_connection):
    conn, peer = open_connection()
    peer.send(client_frame(OP_BINARY, b"\x00\xff\x10"))
    assert conn.messages == [b"\x00\xff\x10"]


@pytest.mark.gen_test
async def test_any_mask_is_removed(open_connection):
    conn, peer = open_connection()
    for mask in (b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x01\x02\x03\x04"):
        peer.send(client_frame(OP_BINARY, bytes(range(256)) * 2, mask=mask))
    assert conn.messages == [bytes(range(256)) * 2] * 3


@pytest.mark.gen_test
async def test_an_empty_message_is_a_message(open_connection):
    conn, peer = open_connection()
    peer.send(client_frame(OP_TEXT, b""))
    assert conn.messages == [""]


@pytest.mark.gen_test
async def test_16_and_64_bit_lengths_are_read(open_connection):
    conn, peer = open_connection(max_message=200_000)
    medium, large = b"m" * 300, bytes(range(256)) * 600  # 153,600 bytes: several reads
    peer.send(client_frame(OP_BINARY, medium) + client_frame(OP_BINARY, large))
    assert conn.messages == [medium, large]


@pytest.mark.gen_test
async def test_a_frame_that_trickles_in_byte_by_byte_is_one_message(open_connection):
    conn, peer = open_connection()
    frame = client_frame(OP_TEXT, b"x" * 300)
    peer.send(frame, chunk=1)
    assert conn.messages == ["x" * 300]
    assert conn.inbuf is None


@pytest.mark.gen_test
async def test_frames_that_arrive_together_are_messages_in_order(open_connection):
    conn, peer = open_connection()
    peer.send(b"".join(client_frame(OP_TEXT, str(n).encode()) for n in range(5)))
    assert conn.messages == ["0", "1", "2", "3", "4"]


# --- fragmentation -----------------------------------------------------------------------------

@pytest.mark.gen_test
async def test_fragments_make_one_message(open_connection):
    conn, peer = open_connection()
    peer.send(client_frame(OP_TEXT, b"one ", fin=False)
              + client_frame(OP_CONTINUATION, b"two ", fin=False)
              + client_frame(OP_CONTINUATION, b"three"))
    assert conn.messages == ["one two three"]


@pytest.mark.gen_test
async def test_a_binary_message_may_come_in_fragments_with_empty_ones(open_connection):
    conn, peer = open_connection()
    peer.send(client_frame(OP_BINARY, b"", fin=False)
              + client_frame(OP_CONTINUATION, b"\x01", fin=False)
              + client_frame(OP_CONTINUATION, b""))
    assert conn.messages == [b"\x01"]


@pytest.mark.gen_test
async def test_a_ping_between_fragments_is_answered_at_once(open_connection):
    conn, peer = open_connection()
    peer.send(client_frame(OP_TEXT, b"first ", fin=False) + client_frame(OP_PING, b"are you there"))
    frames = peer.received()
    assert [(frame.opcode, frame.payload) for frame in frames] == [(OP_PONG, b"are you there")]
    assert conn.messages == []
    peer.send(client_frame(OP_CONTINUATION, b"second"))
    assert conn.messages == ["first second"]


@pytest.mark.gen_test
async def test_a_character_split_between_fragments_is_valid_utf8(open_connection):
    conn, peer = open_connection()
    euro = "€".encode()
    peer.send(client_frame(OP_TEXT, euro[:1], fin=False)
              + client_frame(OP_CONTINUATION, euro[1:2], fin=False)
              + client_frame(OP_CONTINUATION, euro[2:]))
    assert conn.messages == ["€"]


@pytest.mark.gen_test
async def test_a_continuation_without_a_message_to_continue_fails_with_1002(open_connection):
    conn, peer = open_connection()
    peer.send(client_frame(OP_CONTINUATION, b"orphan"))
    assert_failed(peer, 1002)
    assert conn.messages == []


@pytest.mark.gen_test
async def test_a_new_message_before_the_last_one_is_finished_fails_with_1002(open_connection):
    conn, peer = open_connection()
    peer.send(client_frame(OP_TEXT, b"unfinished", fin=False) + client_frame(OP_TEXT, b"next"))
    assert_failed(peer, 1002)
    assert conn.messages == []


# --- control frames ----------------------------------------------------------------------------

@pytest.mark.gen_test
async def test_a_ping_gets_a_pong_with_its_payload(open_connection):
    conn, peer = open_connection()
    peer.send(client_frame(OP_PING, b"\x00payload\xff"))
    assert [(frame.opcode, frame.payload) for frame in peer.received()] == [
        (OP_PONG, b"\x00payload\xff")]


@pytest.mark.gen_test
async def test_an_unsolicited_pong_is_ignored(open_connection):
    conn, peer = open_connection()
    peer.send(client_frame(OP_PONG, b"hi") + client_frame(OP_TEXT, b"after"))
    assert peer.received() == []
    assert conn.messages == ["after"]


@pytest.mark.gen_test
async def test_a_control_frame_over_125_bytes_fails_with_1002(open_connection):
    conn, peer = open_connection()
    peer.send(client_frame(OP_PING, b"p" * 126))
    assert_failed(peer, 1002)


@pytest.mark.gen_test
async def test_a_fragmented_control_frame_fails_with_1002(open_connection):
    conn, peer = open_connection()
    peer.send(client_frame(OP_PING, b"part", fin=False))
    assert_failed(peer, 1002)


# --- frames that break the protocol ------------------------------------------------------------

@pytest.mark.gen_test
async def test_an_unmasked_client_frame_fails_with_1002(open_connection):
    conn, peer = open_connection()
    peer.send(client_frame(OP_TEXT, b"plain", mask=None))
    assert_failed(peer, 1002)
    assert conn.messages == []


@pytest.mark.parametrize("rsv", [0x40, 0x20, 0x10, 0x70])
@pytest.mark.gen_test
async def test_a_reserved_bit_without_an_extension_fails_with_1002(open_connection, rsv):
    conn, peer = open_connection()
    peer.send(client_frame(OP_TEXT, b"x", rsv=rsv))
    assert_failed(peer, 1002)
    assert conn.messages == []


@pytest.mark.parametrize("opcode", [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF])
@pytest.mark.gen_test
async def test_a_reserved_opcode_fails_with_1002(open_connection, opcode):
    conn, peer = open_connection()
    peer.send(client_frame(opcode, b"x"))
    assert_failed(peer, 1002)


@pytest.mark.gen_test
async def test_frames_after_a_protocol_error_are_not_handled(open_connection):
    conn, peer = open_connection()
    peer.send(client_frame(OP_TEXT, b"before") + client_frame(0x3, b"")
              + client_frame(OP_TEXT, b"after"))
    assert conn.messages == ["before"]
    assert_failed(peer, 1002)


@pytest.mark.gen_test
async def test_a_message_of_exactly_the_limit_is_accepted(open_connection):
    conn, peer = open_connection()
    peer.send(client_frame(OP_BINARY, b"x" * MAX_MESSAGE))
    assert conn.messages == [b"x" * MAX_MESSAGE]


@pytest.mark.gen_test
async def test_a_frame_over_the_limit_fails_with_1009_before_its_payload_arrives(open_connection):
    conn, peer = open_connection()
    peer.send(client_frame(OP_BINARY, length=1 << 40)[:14])  # the header and mask alone
    assert_failed(peer, 1009)


@pytest.mark.gen_test
async def test_fragments_together_over_the_limit_fail_with_1009(open_connection):
    conn, peer = open_connection()
    half = b"x" * (MAX_MESSAGE // 2)
    peer.send(client_frame(OP_TEXT, half, fin=False) + client_frame(OP_CONTINUATION, half,
                                                                    fin=False))
    assert conn.state != CLOSED
    peer.send(client_frame(OP_CONTINUATION, b"!"))
    assert_failed(peer, 1009)
    assert conn.messages == []


@pytest.mark.parametrize("payload", [
    b"\xff", b"caf\xc3", b"\xed\xa0\x80",  # a byte never in UTF-8, a cut character, a surrogate
    "κόσμε".encode() + b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
])
@pytest.mark.gen_test
async def test_a_text_message_that_is_not_utf8_fails_with_1007(open_connection, payload):
    conn, peer = open_connection()
    peer.send(client_frame(OP_TEXT, payload))
    assert_failed(peer, 1007)


@pytest.mark.gen_test
async def test_a_fragmented_text_message_that_is_not_utf8_fails_with_1007(open_connection):
    conn, peer = open_connection()
    peer.send(client_frame(OP_TEXT, b"ok so far", fin=False)
              + client_frame(OP_CONTINUATION, b"\xc0\xaf"))
    assert_failed(peer, 1007)


# --- closing -----------------------------------------------------------------------------------

@pytest.mark.gen_test
async def test_a_close_from_the_peer_is_echoed_then_the_server_closes_tcp(open_connection):
    conn, peer = open_connection()
    peer.send(client_frame(OP_CLOSE, close_payload(1000, b"bye")))
    [frame] = peer.received()
    assert (frame.opcode, frame.code) == (OP_CLOSE, 1000)
    assert peer.eof and conn.closed
    assert conn.close_code == 1000


@pytest.mark.gen_test
async def test_an_empty_close_is_echoed_empty(open_connection):
    conn, peer = open_connection()
    peer.send(client_frame(OP_CLOSE))
    [frame] = peer.received()
    assert (frame.opcode, frame.payload) == (OP_CLOSE, b"")
    assert peer.eof and conn.close_code is None


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                                  1013, 1014, 3000, 3999, 4000, 4999])
@pytest.mark.gen_test
async def test_a_close_code_a_peer_may_send_is_echoed(open_connection, code):
    conn, peer = open_connection()
    peer.send(client_frame(OP_CLOSE, close_payload(code)))
    [frame] = peer.received()
    assert frame.code == code


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000,
                                  65535])
@pytest.mark.gen_test
async def test_a_close_code_a_peer_may_not_send_fails_with_1002(open_connection, code):
    conn, peer = open_connection()
    peer.send(client_frame(OP_CLOSE, close_payload(code)))
    assert_failed(peer, 1002)


@pytest.mark.gen_test
async def test_a_one_byte_close_payload_fails_with_1002(open_connection):
    conn, peer = open_connection()
    peer.send(client_frame(OP_CLOSE, b"\x03"))
    assert_failed(peer, 1002)


@pytest.mark.gen_test
async def test_a_close_reason_that_is_not_utf8_fails_with_1007(open_connection):
    conn, peer = open_connection()
    peer.send(client_frame(OP_CLOSE, close_payload(1000, b"\xff\xfe")))
    assert_failed(peer, 1007)


@pytest.mark.gen_test
async def test_after_the_server_closes_data_is_ignored_until_the_peers_close(open_connection):
    conn, peer = open_connection()
    conn.close(1001, "going away")
    [frame] = peer.received()
    assert (frame.code, frame.payload[2:]) == (1001, b"going away")
    conn.write(server_frame(OP_TEXT, b"too late"))
    peer.send(client_frame(OP_TEXT, b"late message") + client_frame(OP_PING, b"late ping"))
    assert conn.messages == [] and peer.received() == []
    assert not conn.closed
    peer.send(client_frame(OP_CLOSE, close_payload(1001)))
    assert conn.closed and peer.received() == [] and peer.eof


@pytest.mark.gen_test
async def test_a_close_the_peer_never_answers_ends_at_the_timeout(open_connection, monkeypatch):
    monkeypatch.setattr(websocket, "CLOSE_TIMEOUT", 0.05)
    conn, peer = open_connection()
    conn.close()
    await asyncio.sleep(0.2)
    assert conn.closed
    [frame] = peer.received()
    assert frame.code == 1000 and peer.eof


@pytest.mark.gen_test
async def test_tcp_closed_without_a_close_frame_ends_the_connection(open_connection):
    conn, peer = open_connection()
    peer.sock.shutdown(socket.SHUT_WR)
    conn._on_readable()
    assert conn.closed and conn.state == CLOSED


# --- flow ---------------------------------------------------------------------------------------

@pytest.mark.gen_test
async def test_a_peer_that_does_not_read_is_closed_with_1013_once_its_backlog_passes_the_limit(
        open_connection):
    conn, peer = open_connection(max_pending=64 * 1024)
    frame = server_frame(OP_BINARY, b"d" * 16384)
    sent = 0
    while conn.state == websocket.OPEN:
        conn.write(frame)
        sent += 1
        assert sent < 1000, "never backed up"
    conn.write(frame)  # nothing more once the close has begun
    frames = []
    while not conn.closed:  # the peer reads now; the close goes out after what was queued
        frames += peer.received()
        conn.loop.add_reader(conn.fd, conn._on_readable)  # its close answer must be read
        if frames and frames[-1].opcode == OP_CLOSE:
            peer.sock.sendall(client_frame(OP_CLOSE, close_payload(1013)))
        await asyncio.sleep(0.01)
    assert [frame.payload for frame in frames[:-1]] == [b"d" * 16384] * sent
    assert frames[-1].code == 1013


@pytest.mark.gen_test
async def test_messages_handled_by_a_coroutine_are_handled_one_at_a_time_in_order(
        open_connection):
    conn, peer = open_connection()
    events = []

    async def handle(message):
        events.append(("start", message))
        await asyncio.sleep(0.01)
        events.append(("end", message))

    conn.handler = handle
    conn.loop.add_reader(conn.fd, conn._on_readable)  # as start() does, on the loop
    peer.sock.sendall(b"".join(client_frame(OP_TEXT, str(n).encode()) for n in range(3)))
    for _ in range(100):
        if len(events) == 6:
            break
        await asyncio.sleep(0.01)
    assert events == [("start", "0"), ("end", "0"), ("start", "1"), ("end", "1"),
                      ("start", "2"), ("end", "2")]
    conn.abort()


@pytest.mark.gen_test
async def test_a_message_whose_handling_fails_is_consumed_and_the_next_one_handled(
        open_connection):
    conn, peer = open_connection()
    seen = []

    def handle(message):
        seen.append(message)
        if message == "bad":
            raise ValueError("handler bug")

    conn.handler = handle
    peer.send(client_frame(OP_TEXT, b"bad") + client_frame(OP_TEXT, b"good"))
    assert seen == ["bad", "good"]
    assert conn.state == websocket.OPEN and conn.inbuf is None


@pytest.mark.gen_test
async def test_a_ping_goes_out_once_per_interval_and_a_silent_peer_is_dropped(open_connection):
    conn, peer = open_connection()
    start = conn.pinged_at
    conn.heartbeat(start + 5, interval=10)
    assert peer.received() == []
    conn.heartbeat(start + 10, interval=10)
    assert [frame.opcode for frame in peer.received()] == [OP_PING]
    conn.heartbeat(start + 20, interval=10)  # a whole interval without a frame from the peer
    assert conn.closed and peer.received() == [] and peer.eof


@pytest.mark.gen_test
async def test_any_frame_from_the_peer_answers_a_ping(open_connection):
    conn, peer = open_connection()
    start = conn.pinged_at
    conn.heartbeat(start + 10, interval=10)
    peer.send(client_frame(OP_TEXT, b"still here"))
    conn.heartbeat(start + 20, interval=10)
    assert [frame.opcode for frame in peer.received()] == [OP_PING, OP_PING]
    assert not conn.closed
