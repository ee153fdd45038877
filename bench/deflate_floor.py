"""How small one typical post event can get with permessage-deflate, and why: the same message
compressed on its own (what a peer that asked for server_no_context_takeover gets, and the
first event of any connection) at every zlib level, against a compressor that kept its
context from one earlier event of another post (what Tornado and websockets do per
connection, and what the server sends once for every subscriber that inflated that event).

    python -m bench.deflate_floor

No server: the frame payload is the typical event of bench.peers.common, the message the
compression scenario (bench.deflate) sends; the server compresses it with
tornado_app.realtime.deflate.deflate_message (level 6).
"""

import zlib

from tornado_app.realtime.deflate import deflate_message

from .peers.common import EARLIER_EVENT, TYPICAL_CONTENT, TYPICAL_TITLE, event

# The post sent before the typical one in bench.deflate: the JSON keys and the envelope repeat,
# the prose does not.
EARLIER = EARLIER_EVENT


def alone(payload: bytes, level: int) -> int:
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15, 9)
    return len(compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)) - 4


def after(earlier: bytes, payload: bytes) -> int:
    """Bytes of `payload` from a compressor that compressed `earlier` first (context kept)."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    compressor.compress(earlier)
    compressor.flush(zlib.Z_SYNC_FLUSH)
    return len(compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)) - 4


def main() -> None:
    payload = event(TYPICAL_CONTENT, TYPICAL_TITLE).encode()
    plain = len(payload)
    print(f"typical post event: {plain} bytes of JSON "
          f"({len(TYPICAL_CONTENT.encode())} of them the post's prose)")
    shipped = len(deflate_message(payload))
    print(f"  as the server sends it (deflate_message, level 6): {shipped} B = "
          f"{shipped / plain:.3f} of plain")
    for level in range(1, 10):
        size = alone(payload, level)
        print(f"  alone, zlib level {level}, memLevel 9: {size} B = {size / plain:.3f}")
    prose = TYPICAL_CONTENT.encode()
    size = alone(prose, 9)
    print(f"  the prose by itself, level 9: {size} of {len(prose)} B = {size / len(prose):.3f}")
    size = after(EARLIER.encode(), payload)
    print(f"  context kept from one earlier post event (per-connection compressors): "
          f"{size} B = {size / plain:.3f}")


if __name__ == "__main__":
    main()
