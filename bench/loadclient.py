"""Client processes that hold many connections each, driven from the benchmark through pipes.

One process (uvloop when installed, so the client spends as little CPU as it can next to the
server on this 2-core machine) holds up to a few thousand connections from its own 127.0.x.y
source address. The parent sends each the same command at once (open, subscribe, arm, collect,
exit) and merges the answers; all times are time.time() of this one machine.
"""

import asyncio
import math
import multiprocessing as mp
import os
import socket
import time

from . import procs
from .wsproto import (PollClient, Tally, WsClient, client_frame, deflated, poll_request,
                      ws_upgrade_request)

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
CONNECT_TIMEOUT = 30.0
TOTAL_IN_FLIGHT = 96  # handshakes in flight across all processes: under Tornado's backlog of 128
# A long-poll is "open" as soon as its request is written, long before the server has accepted
# and read it; unpaced, a burst of connects overflows a 128-connection accept queue and the
# dropped SYNs come back a second later. Each poll keeps its slot this long after connecting,
# which caps the client at TOTAL_IN_FLIGHT / POLL_PACE = 3,200 new polls per second.
POLL_PACE = 0.03
SUBSCRIBE_OP = b'{"op":"subscribe","channels":["posts"]}'
SUBSCRIBE = client_frame(0x1, SUBSCRIBE_OP)
# Where permessage-deflate was accepted, the subscribe goes compressed, as a browser sends it.
SUBSCRIBE_DEFLATED = client_frame(0x1, deflated(SUBSCRIBE_OP), rsv=0x40)


class Worker:
    def __init__(self, conn, spec: dict):
        self.conn = conn
        self.spec = spec
        self.tally = Tally()
        self.tally.marker = spec.get("marker")
        self.clients: list = []

    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        self.conn.send(("ready", os.getpid()))
        while True:
            cmd, *args = await loop.run_in_executor(None, self.conn.recv)
            handler = getattr(self, "cmd_" + cmd)
            self.conn.send(await handler(*args))
            if cmd == "exit":
                return

    async def cmd_open(self) -> dict:
        spec = self.spec
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(spec["in_flight"])
        if spec["kind"] == "ws":
            request = ws_upgrade_request(spec["host"], spec["port"], spec["path"], spec.get("token"),
                                         spec.get("deflate", False))
            factory = WsClient
        else:
            request = poll_request(spec["host"], spec["port"], spec["path"])
            factory = PollClient
        last_ok = None

        async def one():
            nonlocal last_ok
            async with gate:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                # The port is chosen at connect(), per destination: no ephemeral-port shortage.
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.setblocking(False)
                client = None
                try:
                    sock.bind((spec["source"], 0))
                    await asyncio.wait_for(loop.sock_connect(sock, (spec["host"], spec["port"])),
                                           CONNECT_TIMEOUT)
                    client = factory(self.tally, request, loop.create_future())
                    await loop.create_connection(lambda: client, sock=sock)
                    await asyncio.wait_for(client.ready, CONNECT_TIMEOUT)
                    self.clients.append(client)
                    last_ok = time.time()
                    if spec["kind"] == "poll":
                        await asyncio.sleep(POLL_PACE)
                except Exception as exc:  # counted and reported, never fatal to the run
                    self.tally.error(f"{type(exc).__name__}: {exc}"[:160])
                    if client is not None and client.transport is not None:
                        client.transport.close()
                    else:
                        sock.close()

        start, cpu = time.time(), time.process_time()
        await asyncio.gather(*(one() for _ in range(spec["count"])))
        return {"opened": len(self.clients), "start": start, "end": last_ok or time.time(),
                "cpu": time.process_time() - cpu, "errors": self._take_errors()}

    async def cmd_subscribe(self, timeout: float) -> dict:
        tally = self.tally
        tally.ack_target = len(self.clients)
        tally.all_acked = asyncio.get_running_loop().create_future()
        start = time.time()
        for client in self.clients:
            client.send(SUBSCRIBE_DEFLATED if client.deflate else SUBSCRIBE)
        try:
            await asyncio.wait_for(tally.all_acked, timeout)
        except asyncio.TimeoutError:
            pass
        return {"acked": tally.acks, "start": start, "end": time.time(),
                "errors": self._take_errors()}

    async def cmd_arm(self) -> dict:
        tally = self.tally
        live = [c for c in self.clients if c.transport is not None]
        tally.expected = len(live)
        tally.armed = True
        tally.all_got = asyncio.get_running_loop().create_future()
        if not live:
            tally.all_got.set_result(None)
        return {"expected": tally.expected, "errors": self._take_errors()}

    async def cmd_collect(self, timeout: float) -> dict:
        tally = self.tally
        try:
            await asyncio.wait_for(asyncio.shield(tally.all_got), timeout)
        except asyncio.TimeoutError:
            pass
        return {"expected": tally.expected, "got": tally.got, "first": tally.first,
                "last": tally.last, "wire_bytes": tally.wire_bytes,
                "compressed": tally.compressed, "errors": self._take_errors()}

    async def cmd_count(self) -> dict:
        return {"open": sum(c.transport is not None for c in self.clients),
                "errors": self._take_errors()}

    async def cmd_exit(self) -> dict:
        self.tally.closing = True
        for client in self.clients:
            if client.transport is not None:
                client.transport.close()
        await asyncio.sleep(0.2)  # let the FINs go out before the process ends
        return {"errors": self._take_errors()}

    def _take_errors(self) -> dict:
        errors, self.tally.errors = self.tally.errors, {}
        return errors


def run_worker(worker_class, conn, spec: dict) -> None:
    """A client process's main: `worker_class(conn, spec).main()` on uvloop when it is there."""
    try:
        import uvloop
        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(worker_class(conn, spec).main())


def worker_main(conn, spec: dict) -> None:
    run_worker(Worker, conn, spec)


def _merge_errors(replies) -> dict:
    out: dict[str, int] = {}
    for reply in replies:
        for kind, n in reply.get("errors", {}).items():
            out[kind] = out.get(kind, 0) + n
    return out


class Fleet:
    """`total` connections of one kind ("ws" or "poll") spread over client processes."""

    def __init__(self, kind: str, total: int, host: str, port: int, path: str,
                 token: str | None = None, per_process: int = 5000, worker=None,
                 extra: dict | None = None, deflate: bool = False):
        """`worker(conn, spec)`: the client processes' main (default: `worker_main`); `extra`
        goes into every process's spec; `deflate`: offer permessage-deflate."""
        nprocs = max(2, math.ceil(total / per_process))
        ctx = mp.get_context("spawn")
        self.conns, self.processes = [], []
        self.errors: dict[str, int] = {}
        for i in range(nprocs):
            count = total // nprocs + (1 if i < total % nprocs else 0)
            spec = {"kind": kind, "host": host, "port": port, "path": path, "token": token,
                    "deflate": deflate,
                    "count": count, "source": procs.next_source_address(),
                    "in_flight": max(8, TOTAL_IN_FLIGHT // nprocs), **(extra or {})}
            parent, child = ctx.Pipe()
            process = ctx.Process(target=worker or worker_main, args=(child, spec), daemon=True)
            process.start()
            self.conns.append(parent)
            self.processes.append(process)
        try:
            for conn in self.conns:
                self._recv(conn, 60)
        except BaseException:
            self.close()  # no client process outlives a failed start
            raise

    def _recv(self, conn, timeout: float):
        if not conn.poll(timeout):
            raise TimeoutError(f"a client process did not answer within {timeout:.0f} s")
        return conn.recv()

    def command(self, *cmd, timeout: float = 300.0) -> list[dict]:
        for conn in self.conns:
            conn.send(cmd)
        replies = [self._recv(conn, timeout) for conn in self.conns]
        for kind, n in _merge_errors(replies).items():
            self.errors[kind] = self.errors.get(kind, 0) + n
        return replies

    def open(self) -> dict:
        replies = self.command("open", timeout=900)
        opened = sum(r["opened"] for r in replies)
        start = min(r["start"] for r in replies)
        end = max(r["end"] for r in replies)
        return {"opened": opened, "seconds": end - start, "cpu": sum(r["cpu"] for r in replies),
                "per_second": opened / (end - start) if end > start else None}

    def subscribe(self, timeout: float = 120.0) -> dict:
        replies = self.command("subscribe", timeout, timeout=timeout + 30)
        acked = sum(r["acked"] for r in replies)
        start = min(r["start"] for r in replies)
        end = max(r["end"] for r in replies)
        return {"acked": acked, "seconds": end - start,
                "per_second": acked / (end - start) if end > start else None}

    def arm(self) -> int:
        return sum(r["expected"] for r in self.command("arm"))

    def collect(self, timeout: float) -> dict:
        replies = self.command("collect", timeout, timeout=timeout + 30)
        firsts = [r["first"] for r in replies if r["first"] is not None]
        lasts = [r["last"] for r in replies if r["last"] is not None]
        sizes = [r["wire_bytes"] for r in replies if r.get("wire_bytes") is not None]
        return {"expected": sum(r["expected"] for r in replies),
                "got": sum(r["got"] for r in replies),
                "wire_bytes": sizes[0] if sizes else None,
                "compressed": sum(r.get("compressed", 0) for r in replies),
                "first": min(firsts) if firsts else None, "last": max(lasts) if lasts else None}

    def open_count(self) -> int:
        return sum(r["open"] for r in self.command("count"))

    def close(self) -> None:
        try:
            self.command("exit", timeout=60)
        except (OSError, EOFError, TimeoutError):
            pass
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.kill()  # our own child, by its PID
                process.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
