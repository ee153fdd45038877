"""The `websockets` library's server with its default compression (permessage-deflate with
server_max_window_bits=12, memLevel 5, a compressor kept per connection), for the compression
scenario (bench.deflate). WebSocket only: websockets' HTTP side answers GET alone, so the
broadcast is `GET /broadcast`.

    python -m bench.peers.websockets_peer --port 9001 [--typical]

--typical: each broadcast is the post before the typical one, then the typical post.
"""

import argparse
import asyncio
import http
import json

import websockets
from websockets.asyncio.server import serve

from bench.peers import common

SOCKETS: set = set()


async def handler(ws) -> None:
    SOCKETS.add(ws)
    try:
        async for _ in ws:
            pass
    except websockets.ConnectionClosed:
        pass
    finally:
        SOCKETS.discard(ws)


def routes(events: list):
    def process_request(connection, request):
        if request.path == "/hello":
            return connection.respond(http.HTTPStatus.OK, '{"status":"ok"}')
        if request.path == "/broadcast":
            sockets = list(SOCKETS)
            # The library's own fan-out: one write per connection, each through its compressor.
            for event in events:
                websockets.broadcast(sockets, event)
            return connection.respond(http.HTTPStatus.OK, json.dumps({"sockets": len(sockets)}))
        return None  # /ws: the upgrade
    return process_request


async def main(port: int, typical: bool) -> None:
    # --typical: the post before it, then the typical post (bench.deflate).
    events = [common.EARLIER_EVENT, common.TYPICAL_EVENT] if typical else [common.EVENT]
    # compression="deflate" is the default; said here so the scenario's premise is visible.
    async with serve(handler, "127.0.0.1", port, compression="deflate",
                     process_request=routes(events), max_queue=16, ping_interval=20):
        await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mongodb-uri")  # accepted like the other peers', unused
    parser.add_argument("--db")
    parser.add_argument("--typical", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.port, args.typical))
