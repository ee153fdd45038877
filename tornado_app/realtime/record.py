"""An event as it is delivered: serialized once per transport, however many subscribers."""

import json

from .websocket import OP_TEXT, server_frame


def _dumps(value) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class Record:
    __slots__ = ("seq", "channel", "event", "_json", "_frame", "_sse")

    def __init__(self, event: dict):
        self.seq = event["seq"]
        self.channel = event["channel"]
        self.event = event
        self._json = None
        self._frame = None
        self._sse = None

    @property
    def json(self) -> bytes:
        if self._json is None:
            self._json = _dumps(self.event)
        return self._json

    @property
    def frame(self) -> bytes:
        """The whole WebSocket frame of {"type": "event", "event": ...}."""
        if self._frame is None:
            self._frame = server_frame(OP_TEXT, b'{"type":"event","event":' + self.json + b"}")
        return self._frame

    @property
    def sse(self) -> bytes:
        if self._sse is None:
            self._sse = (b"id: %d\nevent: %s\ndata: " % (self.seq, self.event["type"].encode())
                         + self.json + b"\n\n")
        return self._sse
