"""Events that are ready together for a subscriber leave in one write, each still its own frame,
in order and each exactly once (tornado_app/realtime/hub.py)."""

import asyncio
import socket
import struct

import pytest

from tests.realtime_helpers import WsClient, hand_out_per_turn, publish, wait_until
from tests.test_metrics import scrape
from tornado_app.realtime.hub import Hub

# struct tcp_info (linux/tcp.h): tcpi_segs_out, the segments this socket has sent.
TCPI_SEGS_OUT = 136
TCP_INFO_SIZE = 256


def segments_sent(sock: socket.socket) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_SIZE)
    return struct.unpack_from("I", info, TCPI_SEGS_OUT)[0]


def event(seq: int, channel: str = "posts") -> dict:
    return {"seq": seq, "channel": channel, "type": "test.event", "data": {"n": seq},
            "created_at": "2026-01-01T00:00:00Z"}


async def sessions_of(server, count: int) -> list:
    """The server side of the WebSockets the test opened."""
    await wait_until(lambda: len(server.ctx.connections.sockets) == count)
    return list(server.ctx.connections.sockets)


async def session_of(server):
    [session] = await sessions_of(server, 1)
    return session


@pytest.mark.gen_test
async def test_a_burst_during_a_fan_out_reaches_everyone_in_order_each_once_in_few_writes(
        server, monkeypatch):
    # One subscriber per turn of the loop, so the first event's fan-out is still under way
    # when the rest of the burst arrives, as with 15,000 subscribers.
    hand_out_per_turn(monkeypatch, 1)
    clients = [await WsClient.connect(server.port) for _ in range(3)]
    for ws in clients:
        await ws.subscribe(["posts"])
    sessions = await sessions_of(server, 3)
    hub = server.ctx.hub
    first = hub.last_seq + 1
    before = [segments_sent(session.sock) for session in sessions]
    handed, delivered = hub.handed, hub.delivered
    # Twenty events in one turn of the loop, as Redis or a read of the log brings them.
    for seq in range(first, first + 20):
        hub.on_event(event(seq))
    for ws in clients:
        received = await ws.events(20)
        assert [e["seq"] for e in received] == list(range(first, first + 20))
    assert hub.delivered - delivered == 60
    # The one handed the first event at once gets the other 19 in its next turn; the two
    # not reached yet get all 20 in theirs.
    assert hub.handed - handed == 4
    # One send per hand-over: 4 TCP segments in all, not 60.
    sent = [segments_sent(session.sock) - b for session, b in zip(sessions, before)]
    assert sum(sent) == 4, sent
    for ws in clients:
        assert await _nothing_more(ws)
        ws.close()


async def _nothing_more(ws, seconds: float = 0.3) -> bool:
    try:
        message = await ws.recv(seconds)
    except asyncio.TimeoutError:
        return True
    return message is None


@pytest.mark.gen_test
async def test_a_resume_sends_what_was_missed_in_few_writes(server):
    ws = await WsClient.connect(server.port)
    await ws.subscribe(["posts"])
    [last] = await publish(server, "posts", 1)
    await ws.events(1)
    ws.close()
    await publish(server, "posts", 300)
    ws = await WsClient.connect(server.port)
    session = await session_of(server)
    before = segments_sent(session.sock)
    await ws.subscribe(["posts"], since=last["seq"])
    missed = await ws.events(300)
    assert [e["seq"] for e in missed] == list(range(last["seq"] + 1, last["seq"] + 301))
    # The ack, then the replay page in one send (a few segments of up to 64 KB on loopback),
    # where a send per event made 300.
    assert segments_sent(session.sock) - before <= 10
    ws.close()


@pytest.mark.gen_test
async def test_events_on_several_channels_keep_seq_order_in_one_write(server):
    ws = await WsClient.connect(server.port)
    await ws.subscribe(["posts", "products"])
    hub = server.ctx.hub
    first = hub.last_seq + 1
    channels = ["posts", "products", "other", "products", "posts"]
    for offset, channel in enumerate(channels):
        hub.on_event(event(first + offset, channel))
    received = await ws.events(4)
    assert [(e["seq"], e["channel"]) for e in received] == [
        (first + offset, channel) for offset, channel in enumerate(channels) if channel != "other"]
    ws.close()


# --- the hub alone -------------------------------------------------------------------------


class Recorder:
    """A subscriber that keeps each hand-over it gets."""

    def __init__(self):
        self.handovers: list[list[int]] = []

    def deliver(self, records) -> None:
        self.handovers.append([record.seq for record in records])

    def seqs(self) -> list[int]:
        return [seq for handover in self.handovers for seq in handover]


def hub_with(subscribers) -> Hub:
    hub = Hub(event_log=None)
    hub.started = True
    for subscriber in subscribers:
        hub.subscribe(subscriber, ["posts"])
    return hub


async def until_handed_out(hub: Hub) -> None:
    while hub._turns:
        await asyncio.sleep(0)


@pytest.mark.gen_test
async def test_an_event_during_a_pass_joins_the_turns_still_to_come(monkeypatch):
    hand_out_per_turn(monkeypatch, 2)
    subscribers = [Recorder() for _ in range(5)]
    hub = hub_with(subscribers)
    hub.on_event(event(1))  # the first slice (two subscribers) has it at once
    hub.on_event(event(2))
    hub.on_event(event(3))
    await until_handed_out(hub)
    # The hub's set decides which two went first.
    assert sorted(s.handovers for s in subscribers) == [[[1], [2, 3]]] * 2 + [[[1, 2, 3]]] * 3
    assert hub.delivered == 15 and hub.handed == 7


@pytest.mark.gen_test
async def test_a_subscriber_that_joins_during_a_pass_gets_only_later_events(monkeypatch):
    hand_out_per_turn(monkeypatch, 1)
    early = [Recorder() for _ in range(3)]
    hub = hub_with(early)
    hub.on_event(event(1))
    late = Recorder()
    hub.subscribe(late, ["posts"])
    hub.on_event(event(2))
    await until_handed_out(hub)
    assert all(s.seqs() == [1, 2] for s in early)
    assert late.handovers == [[2]]


@pytest.mark.gen_test
async def test_a_subscriber_gone_during_a_pass_is_handed_nothing_more(monkeypatch):
    hand_out_per_turn(monkeypatch, 1)
    subscribers = [Recorder() for _ in range(3)]
    hub = hub_with(subscribers)
    hub.on_event(event(1))
    [gone] = [s for s in subscribers if s.handovers]  # the one handed event 1 so far
    hub.unsubscribe(gone, ["posts"])
    hub.on_event(event(2))
    await until_handed_out(hub)
    assert gone.seqs() == [1]
    assert [s.seqs() for s in subscribers if s is not gone] == [[1, 2]] * 2


@pytest.mark.gen_test
async def test_metrics_count_hand_overs_next_to_deliveries(api, server, monkeypatch):
    hand_out_per_turn(monkeypatch, 1)
    clients = [await WsClient.connect(server.port) for _ in range(2)]
    for ws in clients:
        await ws.subscribe(["posts"])
    before = await scrape(api)
    hub = server.ctx.hub
    first = hub.last_seq + 1
    for seq in range(first, first + 5):
        hub.on_event(event(seq))
    for ws in clients:
        await ws.events(5)
    after = await scrape(api)
    delivered = "tornado_app_events_delivered_total"
    assert after.value(delivered) - before.value(delivered) == 10
    # [1] then [2..5] to one, [1..5] to the other.
    handed = "tornado_app_event_handovers_total"
    assert after.value(handed) - before.value(handed) == 3
    for ws in clients:
        ws.close()
