"""Long-polls that wait outside Tornado.

A long-poll held by Tornado keeps its RequestHandler, request, headers, HTTP1Connection,
IOStream and suspended coroutines alive (16 KB each), and answering 19,000 of them through
RequestHandler.finish takes 1.5 s. A parked poll is one small object: its socket, the head of its
answer built when it was parked, and the events it has collected. Answers are written straight
to the sockets, a thousand per turn of the loop; the rest of answering (leaving the hub, the
deadlines and the connection set, metrics, the access log) waits until every ready poll has
its answer, and then the connections go back to the HTTP server for their next request, a few
hundred per turn.
"""

import asyncio
import json
import logging
import socket
import time
from collections import deque
from dataclasses import dataclass

from ...runtime.logs import access_log, log_access
from ...runtime.metrics import Metrics
from ..channels import disallowed
from ..connections import Connections
from ..deadlines import Deadlines
from ..grants import GrantCheck
from ..hub import Hub

POLL_MAX_EVENTS = 100
ROUTE = "realtime.poll"
PATH = "/api/v1/poll"
# Per turn of the loop, so that no turn takes long (tens of ms at most): answers (about 10 µs
# each), then connections handed back to the HTTP server (about as much again, and as much
# once more when each starts reading its next request on the following turn).
ANSWERS_PER_TURN = 1000
HAND_BACK_PER_TURN = 500


@dataclass(slots=True)
class TakenRequest:
    """A long-poll request whose connection has left Tornado (tornado_app/web/detached_http.py):
    all a parked poll needs of it."""

    socket: socket.socket
    unread: bytes  # what had been read past the request (a pipelined next one)
    head: bytes  # the answer's head up to Content-Length, and the rest of it
    head_end: bytes
    keep_alive: bool
    started: float  # time.time() when the request arrived
    request_id: str
    user: dict | None
    family: str | None  # the access token's family and exp, for realtime.grants
    expires: float | None


def poll_body(records, cursor: int, epoch: str | None) -> bytes:
    return (b'{"events":[' + b",".join(record.json for record in records)
            + b'],"cursor":%d,"epoch":%s}' % (cursor, json.dumps(epoch).encode()))


class ParkedPoll:
    """One waiting long-poll. `records`: the events it has collected, an empty tuple until the
    first (a list made then: 56 B less per poll that waits), None once it has been answered or
    its client left."""

    __slots__ = ("parking", "socket", "fd", "head", "head_end", "keep_alive", "unread",
                 "subscription", "cursor", "records", "deadline", "expiry_queue", "started",
                 "request_id", "user_id", "unsent", "user", "family", "expires")

    def __call__(self, new) -> None:
        """The sink of its subscription (realtime.subscription), which drops what is not newer.
        The poll itself is the sink rather than a bound method of it: one object (64 B) less
        per parked poll (bench/parked_memory.py)."""
        records = self.records
        if records is None or not new:
            return
        # Past the limit an event would not be sent anyway: the client asks again from the cursor.
        if records:
            records.extend(new[:POLL_MAX_EVENTS - len(records)])
        else:
            self.records = list(new[:POLL_MAX_EVENTS])
            self.parking.ready(self)

    def answer(self) -> None:
        """Answers now with what it has (at shutdown)."""
        self.parking.release((self,))

    # For realtime.grants, while a private channel is waited on: the right to read it ended.
    # The poll answers at once with no events and its cursor unchanged, so nothing collected
    # for it goes out; its next request is authorized afresh (401 or 403, or the events).

    def grant_lost(self, code: str, message: str) -> None:
        if self.records is not None:
            self.records = ()
            self.answer()

    def grant_changed(self, user: dict) -> None:
        if disallowed(user, self.subscription.channels)[1]:
            self.grant_lost("forbidden", "")
        else:
            self.user = user


class PollParking:
    """Every parked long-poll of this process: parks them, answers them, times them out, and
    hands their connections back to the HTTP server."""

    def __init__(self, hub: Hub, connections: Connections, metrics: Metrics):
        self.hub = hub
        self.connections = connections
        self.metrics = metrics
        self.server = None  # the CappedHTTPServer connections go back to; set by start()
        self.grants: GrantCheck | None = None  # set by the context (web/context.py)
        # Connections taken out of the HTTP server and not yet given back or closed: they still
        # count toward its connection cap.
        self.sockets_held = 0
        self._ready: list[ParkedPoll] = []  # to answer, in the order they became ready
        # Answered (the answer written, or its rest waiting for the socket), with how long each
        # took: still to leave the hub and the deadlines, be counted and logged.
        self._settling: deque[tuple[ParkedPoll, float]] = deque()
        self._returning: deque[ParkedPoll] = deque()  # answered and settled, to hand back
        self._sending: set[ParkedPoll] = set()  # answers the socket could not take at once
        self._work_scheduled = False
        self._deadlines = Deadlines(self._expired)
        # Every parked poll's subscription calls this one bound method when the log is
        # replaced, rather than one of its own (64 B per poll; bench/parked_memory.py).
        self._on_log_replaced = self._log_replaced

    def start(self, server) -> None:
        self.server = server

    def stop(self) -> None:
        """Closes whatever is still held: the server is going away."""
        self._settle(len(self._settling))
        self._deadlines.stop()
        loop = asyncio.get_running_loop()
        for poll in self._sending:
            loop.remove_writer(poll.fd)
            self._close(poll)
        self._sending.clear()
        while self._returning:
            self._close(self._returning.popleft())

    # --- parking ---------------------------------------------------------------------------

    def park(self, request: TakenRequest, subscription, records: list, cursor: int,
             timeout: float) -> None:
        """Waits on `request`'s connection for events after `cursor`.

        `subscription` (live, its replay done) goes on feeding `records` (what it collected so
        far, usually nothing), now through the parked poll: it is never unsubscribed in
        between, so no event published meanwhile is missed.
        """
        poll = ParkedPoll()
        poll.parking = self
        poll.head, poll.head_end, poll.keep_alive = request.head, request.head_end, request.keep_alive
        poll.started = request.started
        poll.request_id = request.request_id
        poll.user_id = str(request.user["_id"]) if request.user else None
        poll.socket, poll.unread = request.socket, request.unread
        poll.fd = poll.socket.fileno()
        poll.subscription = subscription
        poll.cursor = cursor
        poll.records = records if records else ()
        poll.unsent = None
        poll.user = poll.family = poll.expires = None
        if request.user is not None and disallowed(None, subscription.channels)[1]:
            poll.user, poll.family, poll.expires = request.user, request.family, request.expires
            self.grants.add(poll)
        # The answer goes in one write; no need to wait for an ACK before its last segment.
        poll.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sockets_held += 1
        subscription.retarget(poll, self._on_log_replaced)
        self.connections.polls.add(poll)
        self._deadlines.add(poll, timeout)
        asyncio.get_running_loop().add_reader(poll.fd, self._readable, poll)
        if records:
            self.ready(poll)

    def _log_replaced(self, epoch: str, oldest_seq: int) -> None:
        """The log was replaced: every parked poll is answered now, and its next request's
        cursor gets cursor_expired. The hub tells this to all its subscribers at once
        (Hub.reset), so the first subscription told answers them all; the others find none."""
        if self.connections.polls:
            self.release(list(self.connections.polls))

    def _readable(self, poll: ParkedPoll) -> None:
        """The client hung up, or sent its next request before this one was handed back."""
        loop = asyncio.get_running_loop()
        if poll.records is None:
            # Answered: the HTTP server reads what comes next, once it has the connection back.
            loop.remove_reader(poll.fd)
            return
        try:
            peeked = poll.socket.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            peeked = b""
        loop.remove_reader(poll.fd)
        if not peeked:
            self._unpark(poll)
            self._close(poll)
        # Otherwise a pipelined request: left in the socket for the HTTP server to read after
        # the answer (a hang-up from now on is noticed only then).

    def _unpark(self, poll: ParkedPoll) -> None:
        # The socket stays watched until it is closed or handed back, so the turns that answer
        # do not also pay for unregistering it.
        poll.records = None
        poll.subscription.close()
        if poll.family is not None:
            self.grants.discard(poll)
        self.connections.polls.discard(poll)
        self._deadlines.discard(poll)

    # --- answering -------------------------------------------------------------------------

    def ready(self, poll: ParkedPoll) -> None:
        # Answered on a later turn of the loop, so events published together go together.
        self._ready.append(poll)
        self._schedule_work()

    def _expired(self, polls) -> None:
        self._ready += polls
        self._schedule_work()

    def _schedule_work(self) -> None:
        if not self._work_scheduled:
            self._work_scheduled = True
            asyncio.get_running_loop().call_soon(self._work)

    def _work(self) -> None:
        """One turn's share: answers first; once all are answered, settling them; then handing
        connections back.

        Shares keep each turn short, so other requests are served in between. The last
        answer of an event to 19,000 polls leaves 2-3 µs of Python per poll sooner than if
        each were settled with its answer: 255 against 293 ms for the last to have it, 3 runs
        of each tree by turns (an ad-hoc script on `bench.hold.run`, the code of the `poll`
        scenario, 2026-12-06); BENCHMARKS.md's long-poll section has today's figure."""
        self._work_scheduled = False
        if self._ready:
            polls = self._ready[:ANSWERS_PER_TURN]
            del self._ready[:ANSWERS_PER_TURN]
            self.release(polls, settle_now=False)
        elif self._settling:
            self._settle(ANSWERS_PER_TURN)
        else:
            self._hand_back_some()
        if self._ready or self._settling or self._returning:
            self._schedule_work()

    def release(self, polls, settle_now: bool = True) -> None:
        """Answers `polls` with what each has (those already answered or gone are skipped).
        A poll answered no longer takes events (`records` is None); the rest of answering it
        happens now or, from `_work`, once every ready poll has its answer."""
        answered = self._send_answers(polls)
        if answered:
            self._settling.extend(answered)
            if settle_now:
                self._settle(len(self._settling))
            else:
                self._schedule_work()

    def _settle(self, count: int) -> None:
        settling = self._settling
        polls, durations = [], []
        for _ in range(min(count, len(settling))):
            poll, duration = settling.popleft()
            self._unpark(poll)
            polls.append(poll)
            durations.append(duration)
        if not polls:
            return
        self._record(polls, durations)
        for poll in polls:
            if poll.unsent is not None:
                self._send_rest(poll)
            else:
                self._answered(poll)

    def _send_answers(self, polls) -> list[tuple[ParkedPoll, float]]:
        """Writes each answer to its socket: nothing else, so the last one leaves soon. Each
        answered poll comes back with how long its request took."""
        bodies = {}  # polls that got the same events share one body
        answered = []
        for poll in polls:
            records = poll.records
            if records is None:
                continue
            # The hub hands every subscriber the same Record, so equal tuples mean equal events.
            key = tuple(records) if records else poll.cursor
            piece = bodies.get(key)
            if piece is None:
                body = poll_body(records, records[-1].seq if records else poll.cursor,
                                 self.hub.log.epoch)
                piece = bodies[key] = (b"Content-Length: %d\r\n" % len(body), body)
            length, body = piece
            parts = (poll.head, length, poll.head_end, body)
            try:
                sent = poll.socket.sendmsg(parts)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                # The client is gone; as with Tornado, an answer that could not be sent is not
                # logged.
                self._unpark(poll)
                self._close(poll)
                continue
            total = len(poll.head) + len(length) + len(poll.head_end) + len(body)
            if sent < total:
                poll.unsent = memoryview(b"".join(parts))[sent:]
            poll.records = None  # answered: takes no more events
            answered.append((poll, time.time() - poll.started))
        return answered

    def _record(self, polls, durations) -> None:
        """Metrics and access log lines, as Tornado's log_function gives every other request."""
        self.metrics.observe_many(ROUTE, "GET", 200, durations)
        if access_log.isEnabledFor(logging.INFO):
            for poll, duration in zip(polls, durations):
                log_access(ROUTE, "GET", PATH, 200, duration, poll.request_id, poll.user_id)

    def _send_rest(self, poll: ParkedPoll) -> None:
        self._sending.add(poll)
        asyncio.get_running_loop().add_writer(poll.fd, self._writable, poll)

    def _writable(self, poll: ParkedPoll) -> None:
        try:
            sent = poll.socket.send(poll.unsent)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            sent = None
        if sent is not None and sent < len(poll.unsent):
            poll.unsent = poll.unsent[sent:]
            return
        asyncio.get_running_loop().remove_writer(poll.fd)
        self._sending.discard(poll)
        poll.unsent = None
        if sent is None:
            self._close(poll)
        else:
            self._answered(poll)

    # --- after the answer ------------------------------------------------------------------

    def _answered(self, poll: ParkedPoll) -> None:
        if not poll.keep_alive or self.connections.shutting_down:
            self._close(poll)
            return
        self._returning.append(poll)
        self._schedule_work()

    def _hand_back_some(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(min(HAND_BACK_PER_TURN, len(self._returning))):
            poll = self._returning.popleft()
            if self.connections.shutting_down:
                self._close(poll)
                continue
            self.sockets_held -= 1
            loop.remove_reader(poll.fd)
            try:
                poll.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
            except OSError:
                pass  # already reset by the peer: the HTTP server finds out on its first read
            self.server.take_back(poll.socket, poll.unread)

    def _close(self, poll: ParkedPoll) -> None:
        self.sockets_held -= 1
        asyncio.get_running_loop().remove_reader(poll.fd)
        poll.socket.close()
