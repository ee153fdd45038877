"""What the realtime transports share."""


def unsent_bytes(stream) -> int:
    """Bytes written to a connection that the peer has not taken yet."""
    buffer = getattr(stream, "_write_buffer", None)
    return len(buffer) if buffer is not None else 0
