"""The Autobahn TestSuite's permessage-deflate cases (12.*, 13.*), driven by `kosoku`, against
an echo server on our frame layer and its deflate (bench/autobahn_echo.py).

The cases up to 8 KB: every negotiation variant of 13.* and every data set of 12.*, 72 cases in
about 20 s. The 144 larger ones (1,000 messages of up to 128 KB each) take about 10 minutes on
this machine and run in `make bench` (bench/autobahn.py), their verdicts in BENCHMARKS.md.
"""

import asyncio
import socket

import pytest
from kosoku import FailureError, run_fuzzingclient

from bench.autobahn import CONCURRENCY, CONFORMING, SMALL
from bench.autobahn_echo import main as echo_server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.gen_test(timeout=300)
async def test_autobahn_compression_cases_conform():
    port = _free_port()
    server = asyncio.get_running_loop().create_task(echo_server(port))
    await asyncio.sleep(0.1)
    try:
        try:
            results = await run_fuzzingclient(f"ws://127.0.0.1:{port}/", SMALL,
                                              concurrency=CONCURRENCY)
        except FailureError as failure:
            results = failure.results
    finally:
        server.cancel()
    assert len(results) == len(SMALL)
    failures = [f"{r.case_id}: {r.behavior.value} / close {r.behavior_close.value}: {r.result}"
                for r in results if r.behavior.value not in CONFORMING
                or r.behavior_close.value not in CONFORMING]
    assert not failures, "\n".join(failures)
