"""permessage-deflate (RFC 7692): the negotiation and the two directions of compression.

Each event is compressed once for every subscriber that negotiated the extension, in one of two
forms (record.Record.frame_for):

- on its own, with no earlier message to refer back to: the bytes do not depend on what the
  connection carried before, so they suit every connection;
- after the previous event of its channel: deflated with that event's message as the preset
  history (zdict), so its JSON keys, envelope and anything it shares with that event become
  back-references. A client that keeps its context (RFC 7692's default) has exactly that
  message at the end of its window when its last compressed message was that event, so these
  bytes, too, are the same for every such subscriber: in a steady stream on one channel, nearly
  all of them. The connection only remembers which message it compressed last (a reference).

A typical post event (1.4 KB of JSON, 1 KB of it prose) compresses to 0.52 of its size on its
own at any zlib level, and to 0.40 after one earlier post event (`python -m
bench.deflate_floor`). The server answers `server_no_context_takeover` when the client asked
for it, and when it will not use context (a window under 15 bits): every message is then
compressed on its own. Either way no compressor (about 256 KB with zlib's defaults) is kept
per connection, and there is one compression per event, not one per subscriber.

The client's direction is inflated per message from a fresh decompressobj. A client that keeps
its context (it did not offer `client_no_context_takeover`) may refer back into what it sent
before: the connection keeps that history as bytes (at most its window, 2 ** client_window_bits)
and the next message is inflated with it as zdict, which is exactly the LZ77 window the client's
compressor sees. A decompressobj kept per connection would hold zlib's inflate state and its 32
KB window (about 40 KB) for every idle subscriber; bytes of history hold what the client actually
sent, a few hundred bytes for the ops of this API.
"""

import zlib

EXTENSION = "permessage-deflate"
_TAIL = b"\x00\x00\xff\xff"  # the end of a sync flush, taken off each message (§7.2.1)
# What we answer as client_max_window_bits when the client offered that parameter: the client's
# ops are small, so a 2 KB window loses nothing, and it bounds the history a client that keeps
# its context can leave on the connection to 2 KB (the 3 KB per idle subscriber budget).
CLIENT_WINDOW_BITS = 11
# zlib's deflate raises a window of 8 bits to 9 (raw streams); its longest match distance is
# still under 2 ** 8 then (w_size - MIN_LOOKAHEAD = 250), so a 9-bit compressor suits a peer
# that asked for 8.
_MIN_ZLIB_BITS = 9
# Our own memory level for one-off compressors: level 6 at memLevel 8 is zlib's default trade.
_LEVEL = 6


class Deflate:
    """The agreed parameters of one connection (its `deflate` slot; None: not negotiated)."""

    __slots__ = ("server_bits", "client_bits", "client_context", "full_window", "server_context")

    def __init__(self, server_bits: int, client_bits: int, client_context: bool,
                 server_context: bool = False):
        self.server_bits = server_bits        # our window: at most 2 ** server_bits back
        self.full_window = server_bits == 15  # any message may share the full-window frame
        self.client_bits = client_bits        # the client's window
        self.client_context = client_context  # the client may refer to earlier messages
        # We may refer back to the previous message (the client keeps its context): only with
        # the full window, so one frame per event serves every such peer.
        self.server_context = server_context and self.full_window

    def fits_shared(self, length: int) -> bool:
        """Whether a message of `length` bytes deflated with a full window may go to this peer:
        with no context carried over, no match reaches further back than the message's start."""
        return length <= 1 << self.server_bits


# One Deflate per distinct set of parameters, shared by every connection that agreed to it: a
# handful of combinations exist, so a compressed connection costs a reference, not an object.
_AGREED: dict[tuple, Deflate] = {}


def _agreed(server_bits: int, client_bits: int, client_context: bool,
            server_context: bool) -> Deflate:
    key = (server_bits, client_bits, client_context, server_context)
    deflate = _AGREED.get(key)
    if deflate is None:
        deflate = _AGREED[key] = Deflate(*key)
    return deflate


class Declined(ValueError):
    """An offer we do not accept (§7.1: unknown, duplicate or invalid parameters)."""


def _params(offer: str) -> tuple[str, dict]:
    """`name; a; b=1; c="2"` -> ("name", {"a": None, "b": "1", "c": "2"}); duplicates refused."""
    parts = [part.strip() for part in offer.split(";")]
    name, params = parts[0].lower(), {}
    for part in parts[1:]:
        if not part:
            raise Declined("empty parameter")
        key, eq, value = part.partition("=")
        key = key.strip().lower()
        if key in params:
            raise Declined(f"duplicate parameter {key}")
        if eq:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]  # a quoted-string (§7.1's values are tokens either way)
            params[key] = value
        else:
            params[key] = None
    return name, params


def _bits(value: str | None) -> int:
    if value is None or not (value.isdigit() and len(value) <= 2 and value[0] != "0"):
        raise Declined("window bits must be a number from 8 to 15")
    bits = int(value)
    if not 8 <= bits <= 15:
        raise Declined("window bits must be a number from 8 to 15")
    return bits


def _accept(params: dict) -> tuple[Deflate, str]:
    server_bits, client_bits, client_context, server_context = 15, 15, True, True
    answer = [EXTENSION]
    for key, value in params.items():
        if key == "server_no_context_takeover":
            if value is not None:
                raise Declined("server_no_context_takeover takes no value")
            server_context = False
        elif key == "client_no_context_takeover":
            if value is not None:
                raise Declined("client_no_context_takeover takes no value")
            client_context = False
            answer.append("client_no_context_takeover")
        elif key == "server_max_window_bits":
            server_bits = _bits(value)
        elif key == "client_max_window_bits":  # a value is optional here (§7.1.2.2)
            client_bits = min(CLIENT_WINDOW_BITS, _bits(value) if value is not None else 15)
        else:
            raise Declined(f"unknown parameter {key}")
    deflate = _agreed(server_bits, client_bits, client_context, server_context)
    if not deflate.server_context:
        # Asked for, or ours to offer (§7.1.1.1): the client may then reset its window.
        answer.insert(1, "server_no_context_takeover")
    if "server_max_window_bits" in params:
        # §7.1.2.1: accepting it means answering it, with the value we will keep to.
        answer.append(f"server_max_window_bits={server_bits}")
    if "client_max_window_bits" in params:
        answer.append(f"client_max_window_bits={client_bits}")
    return deflate, "; ".join(answer)


def negotiate(header_values: list[str]) -> tuple[Deflate | None, str | None]:
    """The first acceptable permessage-deflate offer among Sec-WebSocket-Extensions values
    (each a comma-separated list, in the client's order of preference), and the header value
    that accepts it; (None, None) when there is none (the connection goes on uncompressed)."""
    for value in header_values:
        for offer in value.split(","):
            try:
                name, params = _params(offer)
                if name != EXTENSION:
                    continue
                return _accept(params)
            except Declined:
                continue  # §7.1: decline this offer, try the next
    return None, None


# --- server → client -----------------------------------------------------------------------------

def deflate_message(payload: bytes, bits: int = 15) -> bytes:
    """One message compressed on its own (no context taken over), without the sync-flush tail."""
    compressor = zlib.compressobj(_LEVEL, zlib.DEFLATED, -max(bits, _MIN_ZLIB_BITS))
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4] if data.endswith(_TAIL) else data


def deflate_after(payload: bytes, previous: bytes) -> bytes:
    """One message compressed for a peer whose window ends with `previous` (the last message it
    inflated, context kept): back-references may reach into it. Full window only."""
    compressor = zlib.compressobj(_LEVEL, zlib.DEFLATED, -15, zdict=previous)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4] if data.endswith(_TAIL) else data


# --- client → server -----------------------------------------------------------------------------

class TooBig(Exception):
    """The message inflates to more than the connection's limit (closed with 1009)."""


def inflate_message(data: bytes, limit: int, history: bytes | None) -> bytes:
    """A client's compressed message, at most `limit` bytes once inflated. zlib.error on bad
    data; TooBig past the limit, found after inflating at most limit + 1 bytes (a small message
    that would inflate to gigabytes costs no more than the limit)."""
    inflater = zlib.decompressobj(-15, zdict=history) if history else zlib.decompressobj(-15)
    out = inflater.decompress(data + _TAIL, limit + 1)
    if len(out) > limit:
        raise TooBig()
    return out


def next_history(history: bytes | None, message: bytes, bits: int) -> bytes:
    """What a client that keeps its context may refer to in its next message: the last
    2 ** bits bytes of what it sent."""
    window = 1 << bits
    if len(message) >= window:
        return message[-window:]
    return ((history or b"") + message)[-window:]
