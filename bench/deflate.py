"""Scenario deflate: permessage-deflate side by side, in one run. N idle WebSocket subscribers,
then two post events to all of them: a short one, then a typical one (about 1.4 KB of JSON),
which is what is measured: a subscriber in a stream gets an event with the one before it still
in its window. On:

    ours, clients that offer nothing        (ours-plain: the reference)
    ours, clients that offer deflate        (ours-deflate: one compression for every subscriber)
    bare Tornado, get_compression_options   (a compressor per connection)
    websockets, its default compression     (a compressor per connection)

Every client that offers sends what a browser sends (`permessage-deflate;
client_max_window_bits`), sends its subscribe compressed where it was accepted, and inflates
both events with its context kept, as a browser does. Figures: bytes of the typical event on
the wire, server memory per idle connection, and the time from the first event's trigger to the
last subscriber having the typical one.

    python -m bench.deflate [--quick]
"""

import asyncio
import statistics

from tornado_app.realtime.deflate import negotiate

from . import api, cli, fanout_cpu, hold
from .peers.common import EARLIER_CONTENT, EARLIER_TITLE, TYPICAL_CONTENT, TYPICAL_TITLE
from .targets import Ours, Peer

# The clients count the event that carries this (the typical one), not the one before it.
MARKER = TYPICAL_TITLE.encode()


class OursDeflate(Ours):
    event_marker = MARKER

    def __init__(self, stack, offer: bool):
        super().__init__(stack, name="ours-deflate" if offer else "ours-plain")
        self.offer_deflate = offer

    def trigger(self) -> dict:
        seconds = 0.0
        for title, content in ((EARLIER_TITLE, EARLIER_CONTENT), (TYPICAL_TITLE, TYPICAL_CONTENT)):
            status, _, took = api.request(self.port, "POST", "/api/v1/posts",
                                          {"title": title, "content": content,
                                           "tags": ["bench"]}, self.token)
            seconds += took
        return {"status": status, "seconds": seconds, "what": "POST /api/v1/posts twice"}


class TornadoDeflate(Peer):
    name, label = "tornado-deflate", "bare Tornado, compression on"
    module = "bench.peers.tornado_peer"
    offer_deflate = True
    event_marker = MARKER

    def command(self) -> list[str]:
        return super().command() + ["--compression", "--typical"]


class WebsocketsDeflate(Peer):
    name, label = "websockets-deflate", "websockets, default compression"
    module = "bench.peers.websockets_peer"
    offer_deflate = True
    event_marker = MARKER

    def command(self) -> list[str]:
        return super().command() + ["--typical"]

    def trigger(self) -> dict:
        status, _, seconds = api.request(self.port, "GET", "/broadcast", timeout=120)
        return {"status": status, "seconds": seconds, "what": "GET /broadcast"}


def measure(stack, mode) -> dict:
    targets = [OursDeflate(stack, False), OursDeflate(stack, True), TornadoDeflate(stack),
               WebsocketsDeflate(stack)]
    runs = []
    for i in range(mode.runs):
        # Targets alternate within a run, so drift over time hits every target alike.
        runs.append({t.name: cli.attempt(f"deflate run {i + 1} {t.name}", hold.run, t, "ws",
                                         mode.n_deflate, mode)
                     for t in targets})
    return {"runs": runs, "targets": {t.name: t.label for t in targets},
            "fanout_cpu": cli.attempt("deflate fan-out in-process", fanout_in_process,
                                      mode.n_deflate, mode.runs)}


def fanout_in_process(subscribers: int, runs: int) -> dict:
    """Ours' Python share of the fan-out (bench.fanout_cpu: sockets that send nothing), plain
    sessions and compressed ones by turns: the server's side alone, without the load client
    inflating next to it on the same 2 cores. Medians of 15 events per run, ms."""
    deflate, _ = negotiate(["permessage-deflate; client_max_window_bits"])
    data = {"id": "6650f0c2a1b2c3d4e5f60718", "title": TYPICAL_TITLE, "content": TYPICAL_CONTENT}
    out = {"plain": [], "deflate": [], "subscribers": subscribers}
    for _ in range(runs):
        for name, params in (("plain", None), ("deflate", deflate)):
            timings = asyncio.run(fanout_cpu.measure(subscribers, 15, deflate=params, data=data))
            out[name].append(statistics.median(timings) * 1000)
    return out


if __name__ == "__main__":
    cli.main("deflate", measure)
