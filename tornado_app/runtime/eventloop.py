"""The event loop under Tornado: uvloop where it is installed (Linux and macOS), else asyncio's.

Tornado runs on whatever asyncio loop is current. uvloop's loop (callbacks, timers, polling and
the transports PyMongo reads through, all in C) measured 8-10% more requests per second on
`/health` and on `GET /api/v1/posts/{id}` than asyncio's, at 9-12% less server CPU per request
(wrk -t2 -c64 against run.py on FerretDB, server CPU from /proc; the http scenario of bench/
reports both). The tests install the same policy, so they run what production runs.
"""

import asyncio


def install() -> str:
    """Makes every new event loop of this process (and of workers forked from it) a uvloop."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"
