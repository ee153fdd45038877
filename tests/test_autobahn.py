"""The Autobahn TestSuite (RFC 6455 conformance), driven by `kosoku`, against our WebSocket layer.

The cases talk to an echo session behind the real upgrade: the server under test is the whole
server of the `server` fixture (its HTTP server, BaseHandler, EventsSocket's upgrade, the socket
taken from Tornado, realtime/websocket.py's framing and close handshake). Only the session that
runs on the upgraded socket differs: it echoes each message instead of handling subscribe ops.
The echo route is mounted on that running app by this test; the app itself has none.
"""

import pytest
from kosoku import FailureError, run_fuzzingclient

from tornado_app.realtime.transports.websocket import EventsSocket
from tornado_app.realtime.websocket import OP_BINARY, OP_TEXT, WebSocketConnection

# The case selection: every case but the larger permessage-deflate ones. 12.* and 13.* send
# 1,000 messages per case; those of 16 bytes to 8 KB (x.y.1 to x.y.6: every data set of 12.*,
# every negotiation variant of 13.*, 72 cases) run here in about 20 s, the 144 of 16 KB to
# 128 KB (about 10 minutes on this machine) in `make bench` (bench/autobahn.py, all 216).
CASES = ["*"]
EXCLUDED_CASES = [f"{group}.{sub}.{n}" for group, subs in ((12, 5), (13, 7))
                  for sub in range(1, subs + 1) for n in range(7, 19)]
# Cases run side by side (kosoku's concurrency): most of a case is the suite waiting on timers,
# so 4 at a time runs the 301 cases in 4.7 s where one at a time takes 13.2 s (measured, 2 cores
# under other load).
CONCURRENCY = 4
# The suite's sections (it has no 8).
SECTIONS = ["1", "2", "3", "4", "5", "6", "7", "9", "10", "12", "13"]

# Verdicts that conform (NON-STRICT: a SHOULD not followed, e.g. invalid UTF-8 detected at the
# end of a message rather than at the first bad byte; INFORMATIONAL: behaviour the RFC leaves
# open).
CONFORMING = {"OK", "NON-STRICT", "INFORMATIONAL"}
CONFORMING_CLOSE = {"OK", "INFORMATIONAL"}

ECHO_PATH = "/test/autobahn-echo"
# 9.* sends messages of up to 16 MiB and expects them echoed whole.
MAX_MESSAGE = 16 * 1024 * 1024


class EchoSession(WebSocketConnection):
    """Sends every message back as it came (text as text, binary as binary), compressed on its
    own where permessage-deflate was negotiated in the upgrade."""

    __slots__ = ("ctx",)

    def __init__(self, sock, ctx, user=None, claims=None, deflate=None):
        settings = ctx.settings
        super().__init__(sock, settings.ws_max_message_bytes, settings.ws_max_pending_bytes,
                         deflate)
        self.ctx = ctx

    def start(self, handshake: bytes, received: bytes = b"") -> None:
        # Counted like a session, so the server's stop closes it.
        self.ctx.connections.sockets.add(self)
        super().start(handshake, received)

    def on_closed(self) -> None:
        self.ctx.connections.sockets.discard(self)

    def on_message(self, message) -> None:
        if isinstance(message, str):
            self.send_message(OP_TEXT, message.encode("utf-8"))
        else:
            self.send_message(OP_BINARY, message)


class EchoSocket(EventsSocket):
    session_class = EchoSession


@pytest.fixture
def settings_overrides():
    # No heartbeat ping in the middle of a case (the suite counts every frame it gets back);
    # room for the 16 MiB messages of 9.* and their echo, which the socket takes in parts.
    return {"ws_ping_interval": 3600, "ws_max_message_bytes": MAX_MESSAGE,
            "ws_max_pending_bytes": 4 * MAX_MESSAGE}


def verdict(result) -> str | None:
    """None if the case conforms, otherwise why not."""
    behavior, close = result.behavior.value, result.behavior_close.value
    if behavior in CONFORMING and close in CONFORMING_CLOSE:
        return None
    return f"{result.case_id}: {behavior} / close {close}: {result.result} {result.result_close}"


@pytest.mark.gen_test(timeout=600)
async def test_autobahn_cases_conform(server):
    server.http.request_callback.add_handlers(r".*", [(ECHO_PATH, EchoSocket)])
    url = f"ws://127.0.0.1:{server.port}{ECHO_PATH}"
    try:
        results = await run_fuzzingclient(url, CASES, EXCLUDED_CASES, concurrency=CONCURRENCY)
    except FailureError as failure:
        results = failure.results
    # Every section ran (1 framing ... 10 misc), not merely some cases.
    assert {result.case_id.split(".")[0] for result in results} >= set(SECTIONS)
    failures = [reason for reason in map(verdict, results) if reason is not None]
    assert not failures, "\n".join(failures)
