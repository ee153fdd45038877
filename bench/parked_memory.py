"""Memory of parked long-polls, in-process: what each poll the real code parks holds.

`python -m bench.parked_memory [N]` (N = 20,000 by default) runs the long-poll's path without
HTTP: a Subscription made as tornado_app/realtime/transports/longpoll.py makes it (its `add`
with a `since`, an empty replay), then `PollParking.park` with a TakenRequest. tracemalloc
counts what is allocated from the first Subscription to the last park, divided by N, and lists
the lines that allocated most.

Every poll parks on the same socket (N sockets would not fit the descriptor limit), so the
socket, its kernel buffers and the loop's registration of it are not counted per poll (they are
the same whatever a poll holds). The figure is the poll's own objects: the parked poll, its
subscription, channel cursors, collected records, callbacks, its places in the hub, the
deadline queue and the set of open connections, and the head of its answer (built per poll, as
the handler builds it: it carries the request id).
"""

import asyncio
import socket
import sys
import time
import tracemalloc

from tornado_app.realtime.connections import Connections
from tornado_app.realtime.hub import Hub
from tornado_app.realtime.subscription import Subscription
from tornado_app.realtime.transports.parked_poll import POLL_MAX_EVENTS, PollParking, TakenRequest

HEAD = (b"HTTP/1.1 200 OK\r\nServer: TornadoServer/6.4\r\nContent-Type: application/json; "
        b"charset=UTF-8\r\nDate: Sun, 06 Dec 2026 03:50:00 GMT\r\nX-Request-ID: %s\r\n")


class EmptyLog:
    """The part of EventLog a replay that finds nothing reads."""

    epoch = "epoch-1"
    events_read = None

    async def read(self, channels, after, up_to=None, limit=1000):
        return []

    async def latest_seq(self):
        return 0

    async def oldest_seq(self):
        return 1


class Metrics:
    def observe_many(self, *args):
        pass


async def park_all(n: int, channels: list[str]) -> tuple[int, list]:
    hub = Hub(EmptyLog())
    hub.started = True
    parking = PollParking(hub, Connections(), Metrics())
    sock = socket.socket()
    polls = []
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i in range(n):
        records = []

        def collect(new, records=records) -> None:
            records.extend(new[:POLL_MAX_EVENTS - len(records)])

        subscription = Subscription(hub, collect, lambda epoch, oldest: None)
        up_to = await subscription.add(channels, 0, epoch="epoch-1", limit=POLL_MAX_EVENTS)
        request_id = "%032x" % i
        request = TakenRequest(sock, b"", HEAD % request_id.encode(), b"\r\n", True,
                               time.time(), request_id, None, None, None)
        parking.park(request, subscription, records, max(0, up_to), 30.0)
    after = tracemalloc.take_snapshot()
    size = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    top = after.compare_to(before, "lineno")[:20]
    tracemalloc.stop()
    polls.extend(parking.connections.polls)
    parking.stop()
    sock.close()
    return size, top


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    for channels in (["posts"], ["posts", "products", "notifications"]):
        size, top = asyncio.run(park_all(n, channels))
        print(f"{n} parked polls on {len(channels)} channel(s): {size / n:.0f} B each")
        for stat in top:
            frame = stat.traceback[0]
            print(f"  {stat.size_diff / n:7.1f} B  {frame.filename.split('/')[-1]}:{frame.lineno}")


if __name__ == "__main__":
    main()
