"""An event as it is delivered: serialized once per transport, however many subscribers."""

import json

from .deflate import deflate_after, deflate_message
from .websocket import OP_TEXT, RSV1, server_frame

_EVENT_HEAD, _EVENT_TAIL = b'{"type":"event","event":', b"}"


def _dumps(value) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class Record:
    __slots__ = ("seq", "channel", "event", "_json", "_frame", "_deflated",
                 "_small_windows", "_sse", "previous", "_deflated_after")

    def __init__(self, event: dict):
        self.seq = event["seq"]
        self.channel = event["channel"]
        self.event = event
        self._json = None
        self._frame = None
        self._deflated = None  # the compressed frame, made for the first subscriber that wants it
        self._small_windows = None  # {window bits: frame}, for peers that asked for less
        self._sse = None
        # The JSON of the event before this one on its channel, as the hub dispatched them
        # (None: none, or not known), and this event's frame deflated after it. The JSON
        # object stands for its message: a connection remembers the one it sent last.
        self.previous: bytes | None = None
        self._deflated_after = None

    @property
    def json(self) -> bytes:
        if self._json is None:
            self._json = _dumps(self.event)
        return self._json

    @property
    def message(self) -> bytes:
        """The WebSocket message {"type": "event", "event": ...}, as the client reads it (made
        when asked: the frames are what is kept)."""
        return _EVENT_HEAD + self.json + _EVENT_TAIL

    @property
    def frame(self) -> bytes:
        """The whole WebSocket frame of the message, uncompressed."""
        if self._frame is None:
            self._frame = server_frame(OP_TEXT, self.message)
        return self._frame

    def frame_after(self, last: bytes | None) -> bytes | None:
        """The compressed frame for a connection whose last compressed message was the event
        whose JSON is `last` (the peer keeps its context): deflated after the channel's
        previous event when that is `last`, made once for every such peer; None otherwise."""
        frame = self._deflated_after
        if frame is not None and last is self.previous:
            return frame  # nearly every subscriber after the first: one check
        previous = self.previous
        if last is not previous or previous is None:
            return None
        if frame is None:
            frame = self._deflated_after = server_frame(
                OP_TEXT, deflate_after(self.message, _EVENT_HEAD + previous + _EVENT_TAIL), RSV1)
        return frame

    def frame_for(self, deflate) -> bytes:
        """The frame for a connection with these permessage-deflate parameters (None: none),
        compressed on its own.

        Compressed once per record and window, lazily: the same bytes go to every subscriber
        that negotiated the extension (they do not depend on the connection). One window serves
        nearly everyone: a message no longer than a peer's window cannot refer past it, so the
        full-window frame fits it too."""
        if deflate is None:
            return self.frame
        frame = self._deflated
        if frame is not None and deflate.full_window:
            return frame  # nearly every subscriber after the first: one check, no arithmetic
        if deflate.fits_shared(len(self.json) + len(_EVENT_HEAD) + len(_EVENT_TAIL)):
            if self._deflated is None:
                self._deflated = self._compress(15)
            return self._deflated
        bits = deflate.server_bits
        frames = self._small_windows
        if frames is None:
            self._small_windows = frames = {}
        frame = frames.get(bits)
        if frame is None:
            frame = frames[bits] = self._compress(bits)
        return frame

    def _compress(self, bits: int) -> bytes:
        return server_frame(OP_TEXT, deflate_message(self.message, bits), RSV1)

    @property
    def sse(self) -> bytes:
        if self._sse is None:
            self._sse = (b"id: %d\nevent: %s\ndata: " % (self.seq, self.event["type"].encode())
                         + self.json + b"\n\n")
        return self._sse
