"""What the realtime transports share: writing prebuilt bytes to many connections cheaply."""

from tornado.iostream import StreamClosedError


def unsent_bytes(stream) -> int:
    """Bytes written to a connection that the peer has not taken yet."""
    buffer = getattr(stream, "_write_buffer", None)
    return len(buffer) if buffer is not None else 0


def write_now(stream, data: bytes) -> None:
    """Writes `data` to a Tornado IOStream, straight to the socket when nothing is queued.

    IOStream.write makes a Future per call and goes through its buffer even when the socket
    could take the bytes at once; for one event sent to tens of thousands of idle subscribers
    that bookkeeping costs more than the send itself. Only when the socket cannot take it all
    does the rest go through IOStream, which keeps the order and the backpressure accounting.
    (Reads IOStream's `_write_buffer`: private, but stable across Tornado 6.)
    """
    sock = stream.socket
    buffer = getattr(stream, "_write_buffer", None)
    if sock is not None and buffer is not None and not buffer:
        try:
            sent = sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            stream.close()  # the peer is gone; the stream's close callback tidies up
            return
        if sent == len(data):
            return
        data = data[sent:]
    try:
        stream.write(data)
    except StreamClosedError:
        pass
