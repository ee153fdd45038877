"""The floor under a fan-out on this machine: one `send` of a 300-byte frame to each of N
loopback TCP connections, from a bare Python loop, with the receiving process (a) waiting in
epoll as the load client does, (b) stopped, so no receiver is woken up.

    python -m bench.send_floor [--connections N] [--runs N]
"""

import argparse
import multiprocessing as mp
import os
import selectors
import signal
import socket
import statistics
import time

FRAME = b"\x81\x7e\x01\x2c" + b"x" * 300


def receiver(port: int, count: int, ready) -> None:
    """Opens `count` connections and reads whatever arrives, like the bench's load client."""
    selector = selectors.DefaultSelector()
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        socks.append(sock)
    ready.set()
    while True:
        for key, _ in selector.select():
            try:
                key.fileobj.recv(65536)
            except BlockingIOError:
                pass


def one_pass(conns) -> float:
    start = time.perf_counter()
    for conn in conns:
        conn.send(FRAME)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    port = listener.getsockname()[1]
    ready = mp.get_context("fork").Event()
    child = mp.get_context("fork").Process(target=receiver, args=(port, args.connections, ready),
                                           daemon=True)
    child.start()
    conns = []
    try:
        while len(conns) < args.connections:
            conn, _ = listener.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conns.append(conn)
        ready.wait(60)
        time.sleep(0.5)
        results = {}
        for label, stopped in (("receiver waiting in epoll", False), ("receiver stopped", True)):
            if stopped:
                os.kill(child.pid, signal.SIGSTOP)
            timings = []
            for _ in range(args.runs):
                timings.append(one_pass(conns))
                time.sleep(0.3)  # the receiver drains (or the kernel buffers) between passes
            if stopped:
                os.kill(child.pid, signal.SIGCONT)
            results[label] = statistics.median(timings) / len(conns) * 1e6
        for label, micros in results.items():
            print(f"{label}: {micros:.2f} µs per send (median of {args.runs} passes over "
                  f"{len(conns):,} connections)")
    finally:
        child.kill()
        child.join()
        for conn in conns:
            conn.close()


if __name__ == "__main__":
    main()
