"""A latency probe: GET a cheap endpoint every 10 ms on one keep-alive connection, from its own
process, and keep (send time, latency) of each answer.

A Python server's garbage-collection pause or any other long callback blocks its event loop;
seen from outside that is a probe answer that comes late. This cannot tell a GC pause from
other work: that would need a gc.callbacks hook inside the server, which the benchmark does not add.
"""

import multiprocessing as mp
import socket
import time

PERIOD = 0.01
MAX_SECONDS = 900.0  # the probe stops by itself even if nobody tells it to


def _read_response(sock, buf: bytes) -> bytes:
    """Reads one HTTP response with Content-Length; returns what followed it."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        rest += chunk
    return rest[length:]


def _run(conn, port: int, path: str) -> None:
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    samples, failures = [], 0
    sock, buf = None, b""
    start = time.monotonic()
    next_at = start
    while time.monotonic() - start < MAX_SECONDS and not conn.poll(0):
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port), timeout=30)
                buf = b""
            sent = time.time()
            sock.sendall(request)
            buf = _read_response(sock, buf)
            samples.append((sent, time.time() - sent))
        except OSError:
            failures += 1
            if sock is not None:
                sock.close()
            sock = None
        next_at += PERIOD
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_at = time.monotonic()  # behind (the server stalled): no burst to catch up
    if sock is not None:
        sock.close()
    conn.send({"samples": samples, "failures": failures})


class Probe:
    def __init__(self, port: int, path: str):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_run, args=(child, port, path), daemon=True)
        self.process.start()

    def stop(self) -> dict:
        self.conn.send("stop")
        result = self.conn.recv() if self.conn.poll(60) else {"samples": [], "failures": -1}
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
        return result


def window(samples, start: float, end: float) -> dict:
    """Latency figures of the probes that were in flight during [start, end]."""
    lat = sorted(latency for sent, latency in samples if sent <= end and sent + latency >= start)
    if not lat:
        return {"count": 0}
    return {"count": len(lat), "max_ms": lat[-1] * 1000,
            "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
            "over_50ms": sum(1 for x in lat if x > 0.05)}
