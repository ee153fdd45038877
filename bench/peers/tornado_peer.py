"""Bare Tornado: the textbook handlers, nothing tuned.

    python -m bench.peers.tornado_peer --port 9001 --mongodb-uri mongodb://127.0.0.1:27017/
    ... --compression --typical   permessage-deflate on (get_compression_options), and the
                                  broadcast is a post, then a typical post (bench.deflate)
"""

import argparse
import asyncio

from bson import ObjectId
from bson.errors import InvalidId
from pymongo import AsyncMongoClient
from tornado import web, websocket

from bench.peers import common
from bench.peers.common import post_json, titled_event

SOCKETS: set = set()
POLLS: set = set()


class Hello(web.RequestHandler):
    def get(self):
        self.set_header("Content-Type", "application/json")
        self.write(b'{"status":"ok"}')


class Socket(websocket.WebSocketHandler):
    def get_compression_options(self):
        # {} turns permessage-deflate on with Tornado's defaults; None (the default) keeps it off.
        return {} if self.settings["compression"] else None

    def open(self):
        SOCKETS.add(self)

    def on_close(self):
        SOCKETS.discard(self)

    def on_message(self, message):
        pass


class Poll(web.RequestHandler):
    waiting = None

    async def get(self):
        self.waiting = asyncio.get_running_loop().create_future()
        POLLS.add(self.waiting)
        try:
            message = await self.waiting
        except asyncio.CancelledError:
            return
        self.set_header("Content-Type", "application/json")
        self.write(message)

    def on_connection_close(self):
        if self.waiting is not None:
            POLLS.discard(self.waiting)
            self.waiting.cancel()


class Broadcast(web.RequestHandler):
    def post(self):
        event = titled_event(self.request.body, self.settings["event"])
        sockets, polls = list(SOCKETS), list(POLLS)
        POLLS.clear()
        before = self.settings["before"]  # --typical: the post before the typical one
        for sock in sockets:
            if before is not None:
                sock.write_message(before)
            sock.write_message(event)
        for waiting in polls:
            if not waiting.done():
                waiting.set_result(event)
        self.write({"sockets": len(sockets), "polls": len(polls)})


class Post(web.RequestHandler):
    async def get(self, post_id):
        try:
            oid = ObjectId(post_id)
        except InvalidId:
            raise web.HTTPError(404)
        doc = await self.settings["db"].posts.find_one({"_id": oid})
        if doc is None:
            raise web.HTTPError(404)
        self.set_header("Content-Type", "application/json")
        self.write(post_json(doc))


async def main(port: int, uri: str | None, db_name: str, compression: bool = False,
               typical: bool = False) -> None:
    db = AsyncMongoClient(uri, tz_aware=True)[db_name] if uri else None
    app = web.Application([(r"/hello", Hello), (r"/ws", Socket), (r"/poll", Poll),
                           (r"/broadcast", Broadcast), (r"/posts/([^/]+)", Post)], db=db,
                          compression=compression,
                          event=common.TYPICAL_EVENT if typical else common.EVENT,
                          before=common.EARLIER_EVENT if typical else None)
    app.listen(port, "127.0.0.1")
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mongodb-uri")
    parser.add_argument("--db", default="tornado_app")
    parser.add_argument("--compression", action="store_true")
    parser.add_argument("--typical", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.port, args.mongodb_uri, args.db, args.compression, args.typical))
