"""FastAPI on uvicorn with uvloop and httptools: the textbook handlers, nothing tuned.

    python -m bench.peers.fastapi_peer --port 9002 --mongodb-uri mongodb://127.0.0.1:27017/
"""

import argparse
import asyncio
import os
from contextlib import asynccontextmanager

import uvicorn
from bson import ObjectId
from bson.errors import InvalidId
from fastapi import FastAPI, HTTPException, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response
from pymongo import AsyncMongoClient

from bench.peers.common import post_json, titled_event

SOCKETS: set = set()
POLLS: set = set()
STATE: dict = {}


@asynccontextmanager
async def lifespan(app):
    uri = os.environ.get("PEER_MONGODB_URI")
    if uri:
        STATE["db"] = AsyncMongoClient(uri, tz_aware=True)[os.environ["PEER_DB"]]
    yield


app = FastAPI(lifespan=lifespan)


@app.get("/hello")
async def hello():
    return Response(b'{"status":"ok"}', media_type="application/json")


@app.websocket("/ws")
async def ws(websocket: WebSocket):
    await websocket.accept()
    SOCKETS.add(websocket)
    try:
        while True:
            await websocket.receive_text()
    except WebSocketDisconnect:
        pass
    finally:
        SOCKETS.discard(websocket)


@app.get("/poll")
async def poll():
    waiting = asyncio.get_running_loop().create_future()
    POLLS.add(waiting)
    try:
        return Response(await waiting, media_type="application/json")
    finally:
        POLLS.discard(waiting)


@app.post("/broadcast")
async def broadcast(request: Request):
    event = titled_event(await request.body())
    sockets, polls = list(SOCKETS), list(POLLS)
    POLLS.clear()
    for waiting in polls:
        if not waiting.done():
            waiting.set_result(event)
    for sock in sockets:  # the ConnectionManager loop of FastAPI's documentation
        try:
            await sock.send_text(event)
        except Exception:
            SOCKETS.discard(sock)
    return {"sockets": len(sockets), "polls": len(polls)}


@app.get("/posts/{post_id}")
async def get_post(post_id: str):
    try:
        oid = ObjectId(post_id)
    except InvalidId:
        raise HTTPException(404)
    doc = await STATE["db"].posts.find_one({"_id": oid})
    if doc is None:
        raise HTTPException(404)
    return Response(post_json(doc), media_type="application/json")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mongodb-uri")
    parser.add_argument("--db", default="tornado_app")
    args = parser.parse_args()
    if args.mongodb_uri:
        os.environ["PEER_MONGODB_URI"] = args.mongodb_uri
        os.environ["PEER_DB"] = args.db
    # Access logs off, as for the other servers in the benchmark.
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
                log_level="warning", access_log=False)
