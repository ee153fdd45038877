"""The peers: the same endpoints on bare Tornado and on FastAPI/uvicorn, as a user would write them.

    GET  /hello        {"status":"ok"}, the same bytes as our /health
    GET  /ws           WebSocket; held open, fed by /broadcast
    GET  /poll         long-poll, answered by /broadcast
    POST /broadcast    sends EVENT to every WebSocket and answers every pending poll
    GET  /posts/{id}   one post document by id, from the same FerretDB as our server
"""
