"""Benchmarks: our server against bare Tornado and FastAPI/uvicorn, on this machine, in one run.

    python -m bench.run all [--quick]      every scenario, then the report
    python -m bench.ws [--quick]           one scenario (also: poll, http, workers, mixed)

Modules, one job each:
    config     quick and full sizes
    procs      start/stop the processes we own (servers, FerretDB, Redis); RSS and CPU from /proc
    targets    how to start and talk to each server under test (ours and the peers)
    wsproto    the minimal WebSocket / long-poll client protocols
    loadclient client processes holding many connections, driven from here through pipes
    probe      a /health latency probe (10 ms period) to see event-loop stalls from outside
    wrkrun     HTTP load through wrk, parsed
    stats      medians, min, max, ratios
    ws, poll, http, workers, mixed: the scenarios
    report     BENCHMARKS.md from the results JSON
"""
