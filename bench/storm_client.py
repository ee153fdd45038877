"""Client processes for the `storm` and `rate` scenarios: WebSockets that remember the last seq
they received, drop and reconnect all at once with `since`, and time each event they receive.

Runs inside the processes of `loadclient.Fleet` (worker=`storm_worker_main`), driven by the
same commands through a pipe; all times are time.time() of this one machine.
"""

import asyncio
import socket
import time

from .loadclient import CONNECT_TIMEOUT, IP_BIND_ADDRESS_NO_PORT, Worker, run_worker
from .wsproto import WS_ACCEPT, client_frame, frame_at, ws_upgrade_request

# Latency histogram: 1 ms buckets up to a minute; anything later lands in the last one.
BUCKETS = 60_000
TITLE = b'"title":"t'  # the event's title is "t" + the time.time() it was published at
EVENT = b'{"type":"event"'


def subscribe_frame(since: int | None) -> bytes:
    tail = b"" if since is None else b',"since":%d' % since
    return client_frame(0x1, b'{"op":"subscribe","channels":["posts"]%s}' % tail)


class Counts:
    """What one client process saw."""

    def __init__(self):
        self.errors: dict[str, int] = {}
        self.closing = False
        self.acks = 0
        self.resumed: list[float] = []   # when each reconnected connection had everything
        self.want = 0                    # connections that have to resume
        self.all_resumed: asyncio.Future | None = None
        self.timing = False
        self.histogram = [0] * BUCKETS   # latencies, from the sampled connections
        self.latest = 0.0                # the latest receive of an event while timing
        self.timed = 0                   # events received while timing, on every connection

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def resumed_one(self, now: float) -> None:
        self.resumed.append(now)
        if len(self.resumed) >= self.want and self.all_resumed and not self.all_resumed.done():
            self.all_resumed.set_result(None)

    def event_at(self, now: float, payload: bytes) -> None:
        start = payload.find(TITLE)
        if start < 0:
            return
        start += len(TITLE)
        try:
            sent = float(payload[start:payload.index(b'"', start)])
        except ValueError:
            return
        self.histogram[min(BUCKETS - 1, max(0, int((now - sent) * 1000)))] += 1


class Sub(asyncio.Protocol):
    """One WebSocket: upgrade, subscribe (with `since` once it has a seq), track the last seq."""

    __slots__ = ("counts", "request", "transport", "ready", "upgraded", "buf", "last_seq",
                 "since", "missed", "acked", "resumed", "closed", "subscribes", "sampled")

    def __init__(self, counts: Counts, request: bytes, ready, since=None, missed=0,
                 subscribes=True, sampled=True):
        self.counts = counts
        # Only a sample of the connections reads each event's time and seq: the clients share
        # two cores with the server, and 15,000 subscribers × 20 events/s is 300,000 frames/s.
        # The others only count their events.
        self.sampled = sampled
        self.request = request
        self.ready = ready
        self.transport = None
        self.upgraded = False
        self.buf = b""
        self.last_seq = since
        self.since = since
        self.missed = missed       # events it must receive before it counts as resumed
        self.acked = False
        self.resumed = False
        self.closed = False
        self.subscribes = subscribes  # our server; the peers have no subscribe op

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            head = buf[:end]
            if not head.startswith(b"HTTP/1.1 101") or WS_ACCEPT not in head:
                self.closed = True
                self._fail("upgrade refused: " + head.split(b"\r\n", 1)[0].decode(errors="replace"))
                self.transport.close()
                return
            self.upgraded = True
            buf = buf[end + 4:]
            if self.subscribes:
                self.transport.write(subscribe_frame(self.since))
            if not self.ready.done():
                self.ready.set_result(None)
        pos, size = 0, len(buf)
        counts = self.counts
        counted = 0
        while (frame := frame_at(buf, pos, size)) is not None:
            first, head, length = frame
            opcode = first & 0x0F
            if opcode == 0x1 and buf.startswith(EVENT, pos + head):
                counted += 1
                if self.sampled:
                    self._frame(opcode, buf[pos + head:pos + head + length])
            else:
                self._frame(opcode, buf[pos + head:pos + head + length])
            pos += head + length
        self.buf = buf[pos:] if pos < size else b""
        if counted and counts.timing:
            counts.timed += counted
            counts.latest = time.time()

    def _frame(self, opcode: int, payload: bytes) -> None:
        if opcode == 0x9:
            if self.transport is not None:
                self.transport.write(client_frame(0xA, payload[:125]))
            return
        if opcode == 0x8:
            self.closed = True
            return
        head = payload[:24]
        if head.startswith(EVENT):
            at = payload.find(b'"seq":')
            if at >= 0:
                end = at + 6
                while 48 <= payload[end] <= 57:
                    end += 1
                self.last_seq = int(payload[at + 6:end])
            now = time.time()
            if self.counts.timing:
                self.counts.event_at(now, payload)
            if self.missed:
                self.missed -= 1
                if not self.missed and self.acked:
                    self._resumed(now)
        elif b'"subscribed"' in head:
            self.acked = True
            self.counts.acks += 1
            if not self.missed:
                self._resumed(time.time())
        elif b'"error"' in head:
            self.counts.error("error frame: " + payload[:200].decode(errors="replace"))

    def _resumed(self, now: float) -> None:
        if not self.resumed and self.since is not None:
            self.resumed = True
            self.counts.resumed_one(now)

    def connection_lost(self, exc) -> None:
        if not self.ready.done():
            self._fail(f"closed before the upgrade: {exc!r}" if exc else
                       "closed before the upgrade")
        elif not self.closed and not self.counts.closing:
            self.counts.error("connection lost after the upgrade")
        self.closed = True
        self.transport = None

    def _fail(self, message: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(message))


class StormWorker(Worker):
    """Commands: open, subscribe (wait for acks), drop, reconnect, timing, untimed, seqs, exit."""

    def __init__(self, conn, spec: dict):
        super().__init__(conn, spec)
        self.counts = Counts()

    async def _connect(self, count: int, in_flight: int, make) -> tuple[list, float, float]:
        spec = self.spec
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(in_flight)
        opened: list = [None] * count

        async def one(index: int) -> None:
            async with gate:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.setblocking(False)
                client = None
                try:
                    sock.bind((spec["source"], 0))
                    await asyncio.wait_for(loop.sock_connect(sock, (spec["host"], spec["port"])),
                                           CONNECT_TIMEOUT)
                    client = make(index, loop.create_future())
                    await loop.create_connection(lambda: client, sock=sock)
                    await asyncio.wait_for(client.ready, CONNECT_TIMEOUT)
                    opened[index] = client
                except Exception as exc:  # counted and reported, never fatal to the run
                    self.counts.error(f"{type(exc).__name__}: {exc}"[:160])
                    if client is not None and client.transport is not None:
                        client.transport.close()
                    else:
                        sock.close()

        start = time.time()
        await asyncio.gather(*(one(i) for i in range(count)))
        return opened, start, time.time()

    def _request(self) -> bytes:
        spec = self.spec
        return ws_upgrade_request(spec["host"], spec["port"], spec["path"], spec.get("token"))

    async def cmd_open(self) -> dict:
        """Opens and (ours) subscribes live, at most spec["in_flight"] handshakes at once."""
        request, counts, subscribes = self._request(), self.counts, self.spec["subscribes"]
        every = self.spec.get("sample_every", 1)
        opened, start, end = await self._connect(
            self.spec["count"], self.spec["in_flight"],
            lambda i, ready: Sub(counts, request, ready, subscribes=subscribes,
                                 sampled=i % every == 0))
        self.clients = [c for c in opened if c is not None]
        return {"opened": len(self.clients), "start": start, "end": end,
                "errors": self._take_errors()}

    async def cmd_acked(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while self.counts.acks < len(self.clients) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return {"acked": self.counts.acks, "errors": self._take_errors()}

    async def cmd_seqs(self) -> dict:
        seqs = [c.last_seq for c in self.clients if c.transport is not None]
        known = [s for s in seqs if s is not None]
        return {"open": len(seqs), "min": min(known, default=None),
                "max": max(known, default=None), "unknown": len(seqs) - len(known),
                "errors": self._take_errors()}

    async def cmd_drop(self) -> dict:
        """Every connection goes at once, as when a deploy or a network blip cuts them."""
        self.counts.closing = True
        self.dropped = [c.last_seq for c in self.clients]
        for client in self.clients:
            if client.transport is not None:
                client.transport.abort()
        self.clients = []
        await asyncio.sleep(0.1)
        self.counts.closing = False
        return {"dropped": len(self.dropped), "errors": self._take_errors()}

    async def cmd_reconnect(self, missed: int, in_flight: int, timeout: float) -> dict:
        """Reconnects every dropped connection at once with since=its last seq; each resumes
        once its `subscribed` ack and the `missed` events have arrived."""
        counts, request = self.counts, self._request()
        counts.resumed, counts.want, counts.acks = [], len(self.dropped), 0
        counts.all_resumed = asyncio.get_running_loop().create_future()
        seqs = self.dropped
        start = time.time()
        opened, _, connected = await self._connect(
            len(seqs), in_flight,
            lambda i, ready: Sub(counts, request, ready, since=seqs[i], missed=missed))
        self.clients = [c for c in opened if c is not None]
        counts.want = len(self.clients)
        if len(counts.resumed) < counts.want:
            try:
                await asyncio.wait_for(asyncio.shield(counts.all_resumed),
                                       max(0.1, timeout - (time.time() - start)))
            except asyncio.TimeoutError:
                pass
        return {"start": start, "connected": connected, "reconnected": len(self.clients),
                "resumed": list(counts.resumed), "errors": self._take_errors()}

    async def cmd_timing(self, on: bool) -> dict:
        counts = self.counts
        counts.timing = on
        out = {"histogram": counts.histogram, "timed": counts.timed, "latest": counts.latest,
               "open": sum(c.transport is not None for c in self.clients),
               "cpu": time.process_time(), "errors": self._take_errors()}
        if on:
            counts.histogram, counts.timed, counts.latest = [0] * BUCKETS, 0, 0.0
        return out

    async def cmd_timed(self) -> dict:
        return {"timed": self.counts.timed, "latest": self.counts.latest}

    async def cmd_exit(self) -> dict:
        self.counts.closing = True
        for client in self.clients:
            if client.transport is not None:
                client.transport.close()
        await asyncio.sleep(0.2)
        return {"errors": self._take_errors()}

    def _take_errors(self) -> dict:
        errors, self.counts.errors = self.counts.errors, {}
        return errors


def storm_worker_main(conn, spec: dict) -> None:
    run_worker(StormWorker, conn, spec)
