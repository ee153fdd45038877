"""The realtime client on asyncio: WebSocket (websockets), then Server-Sent Events and long-poll
(httpx), with the same cursor model as the JavaScript client (clients/js/realtime.js).

`seq` is a position such that every event up to it on every subscribed channel has been handed to
the application; after any drop the client resumes from it. Each channel also keeps the last seq
it delivered, so an event that comes twice (a replay overlapping live ones) is dropped.
"""

import asyncio
import base64
import inspect
import json
import random
import time
from dataclasses import dataclass, replace
from typing import Awaitable, Callable

import httpx
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus, WebSocketException

TRANSPORTS = ("websocket", "sse", "poll")
API = "/api/v1"
SILENCE = 45.0  # no byte for this long on an open stream or socket: it is dead
HEARTBEAT = 20.0


@dataclass(frozen=True)
class Status:
    state: str  # connecting, open, reconnecting or closed
    attempt: int  # failed attempts since the last successful connection
    transport: str | None


class _Outcome(Exception):
    """How a transport's run ended: refused (try the next transport), dropped or retry (back
    off), auth (fresh token), reset (cursor_expired handled), changed (channels), closed."""

    def __init__(self, kind: str, retry_after: float = 0.0, error: Exception | None = None):
        super().__init__(kind)
        self.kind = kind
        self.retry_after = retry_after
        self.error = error


class RealtimeClient:
    """`async with RealtimeClient(url, channels=[...]) as client: async for event in client`."""

    def __init__(self, url: str, *, channels=(), token: str | None = None,
                 get_token: Callable[[], str | Awaitable[str]] | None = None,
                 since: int | None = None, epoch: str | None = None,
                 transports=TRANSPORTS, on_reset=None, on_status=None, on_error=None,
                 backoff: tuple[float, float] = (0.5, 15.0), poll_timeout: float = 25,
                 connect_timeout: float = 10, websocket_options: dict | None = None):
        self.url = url.rstrip("/")
        self._static_token = token
        self._get_token = get_token
        self.seq = since
        self.epoch = epoch
        self._transports = tuple(transports)
        self._on_reset = on_reset
        self._on_status = on_status
        self._on_error = on_error
        self._backoff = backoff
        self._poll_timeout = poll_timeout
        self._connect_timeout = connect_timeout
        self._ws_options = websocket_options or {}
        self._channels: dict[str, None] = {}
        self._cursors: dict[str, int] = {}
        self._queue: asyncio.Queue = asyncio.Queue()
        self._changes: asyncio.Queue = asyncio.Queue()  # (added, removed) for a live WebSocket
        self._changed = asyncio.Event()
        self._preferred = 0
        self._resets = 0
        self._auth_retried = False
        self._token: str | None = None
        self._token_expires = 0.0
        self._http: httpx.AsyncClient | None = None
        self._task: asyncio.Task | None = None
        self._live: str | None = None
        self.status = Status("connecting", 0, None)
        self.subscribe(channels, since=since)

    # --- public API ----------------------------------------------------------------------------

    async def __aenter__(self) -> "RealtimeClient":
        self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def start(self) -> None:
        if self._task is None:
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(self._connect_timeout,
                                                                 read=None))
            self._task = asyncio.get_running_loop().create_task(self._loop())

    def subscribe(self, channels, since: int | None = None) -> None:
        channels = [channels] if isinstance(channels, str) else list(channels)
        if since is not None and (self.seq is None or since < self.seq):
            self.seq = since
        added = [name for name in channels if name not in self._channels]
        for name in channels:
            self._channels.setdefault(name)
            if since is not None:
                self._cursors[name] = since
            elif self.seq is not None:
                self._cursors.setdefault(name, self.seq)
        if added:
            self._notify(added, [])

    def unsubscribe(self, channels) -> None:
        channels = [channels] if isinstance(channels, str) else list(channels)
        removed = [name for name in channels if name in self._channels]
        for name in removed:
            del self._channels[name]
            self._cursors.pop(name, None)
        if removed:
            self._notify([], removed)

    def __aiter__(self):
        self.start()
        return self

    async def __anext__(self) -> dict:
        event = await self._queue.get()
        if event is None:
            self._queue.put_nowait(None)  # every later iteration ends too
            raise StopAsyncIteration
        return event

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._http is not None:
            await self._http.aclose()
        self._set_status("closed")
        self._queue.put_nowait(None)

    # --- the connection loop -------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            if not self._channels:
                self._changed.clear()
                await self._changed.wait()
                continue
            outcome = _Outcome("refused")
            for kind in self._transports[self._preferred:]:
                outcome = await self._attempt(kind)
                if outcome.kind == "refused" and kind == "websocket" \
                        and kind != self._transports[-1]:
                    # A server that is down (or restarting) refuses every transport: no reason
                    # to fall back, and one that came up just after the attempt would otherwise
                    # keep this client on a lesser transport for as long as that works. So fall
                    # back only once the server answers HTTP and a second attempt fails too.
                    if not await self._reachable():
                        break
                    outcome = await self._attempt(kind)
                if outcome.kind != "refused":
                    break
            if outcome.kind == "changed" or (outcome.kind == "reset" and self._resets < 2):
                continue
            if outcome.kind == "auth" and self._get_token and not self._auth_retried:
                self._auth_retried = True
                self._token = None
                continue
            if outcome.kind == "auth":
                self._report(RuntimeError("the access token was refused (401)"))
            elif outcome.kind == "fatal":
                self._report(outcome.error)
            if outcome.kind == "dropped":
                self._preferred = 0  # a passing failure does not pin a fallback forever
            self._set_status("reconnecting", self.status.attempt + 1)
            await self._sleep(self._delay(outcome.retry_after))

    def _delay(self, retry_after: float) -> float:
        """Exponential backoff with full jitter, never sooner than the server's Retry-After."""
        base, cap = self._backoff
        return max(random.uniform(0, min(cap, base * 2 ** (self.status.attempt - 1))),
                   retry_after)

    async def _sleep(self, seconds: float) -> None:
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    def _notify(self, added, removed) -> None:
        self._changed.set()
        if self._live == "websocket":
            self._changes.put_nowait((added, removed))

    async def _attempt(self, kind: str) -> _Outcome:
        self._changed.clear()
        self._changes = asyncio.Queue()
        self._live = kind
        run = {"websocket": self._run_websocket, "sse": self._run_sse, "poll": self._run_poll}
        try:
            if self.seq is None:
                await self._fetch_head()
            await run[kind]()
            return _Outcome("dropped")
        except _Outcome as outcome:
            return outcome
        except (OSError, httpx.TransportError, WebSocketException, asyncio.TimeoutError) as exc:
            return _Outcome("refused", error=exc)
        except (ValueError, KeyError, TypeError) as exc:  # an answer that is not the protocol's
            self._report(exc)
            return _Outcome("dropped", error=exc)
        finally:
            self._live = None

    def _opened(self, kind: str) -> None:
        self._preferred = self._transports.index(kind)
        self._auth_retried = False
        self._set_status("open", 0, kind)

    def _set_status(self, state: str, attempt: int | None = None, transport=None) -> None:
        self.status = replace(self.status, state=state,
                              attempt=self.status.attempt if attempt is None else attempt,
                              transport=transport or self.status.transport)
        if self._on_status is not None:
            try:
                self._on_status(self.status)
            except Exception as exc:  # an application callback must not stop the client
                self._report(exc)

    def _report(self, error: Exception | None) -> None:
        if self._on_error is not None and error is not None:
            self._on_error(error)

    # --- cursor and delivery -------------------------------------------------------------------

    def _start_at(self, seq: int) -> None:
        self.seq = seq
        for name in self._channels:
            self._cursors.setdefault(name, seq)

    async def _reachable(self) -> bool:
        """Whether the server answers HTTP at all (any status): a poll that answers at once."""
        try:
            await self._http.get(f"{self.url}{API}/poll", headers=await self._headers(),
                                 params={"channels": ",".join(self._channels), "timeout": 0},
                                 timeout=self._connect_timeout)
        except (OSError, httpx.TransportError, asyncio.TimeoutError):
            return False
        return True

    async def _fetch_head(self) -> None:
        """Where the log is now, when the client has no cursor yet: a poll that answers at once."""
        body = (await self._get("/poll", {"channels": ",".join(self._channels),
                                          "timeout": 0})).json()
        self.epoch = body.get("epoch") or self.epoch
        self._start_at(body["cursor"])

    def _deliver(self, event: dict, settled: bool) -> None:
        if settled and (self.seq is None or event["seq"] > self.seq):
            self.seq = event["seq"]
        self._resets = 0
        channel = event["channel"]
        last = self._cursors.get(channel)
        if channel not in self._channels or (last is not None and event["seq"] <= last):
            return  # unsubscribed meanwhile, or a repeat
        self._cursors[channel] = event["seq"]
        self._queue.put_nowait(event)

    async def _reset(self, info: dict) -> _Outcome:
        """cursor_expired: the events after the cursor are gone or the log was replaced. The
        application reloads its state; on_reset may return the Event-Seq of that reload."""
        self._set_status("connecting")  # open again once resubscribed from the new cursor
        self.seq = None
        self._cursors.clear()
        self.epoch = info.get("epoch")
        since = None
        if self._on_reset is not None:
            since = self._on_reset(info)
            if inspect.isawaitable(since):
                since = await since
        oldest = info.get("oldest_seq")
        if isinstance(since, int) and not (isinstance(oldest, int) and since < oldest - 1):
            self._start_at(since)
        self._resets += 1
        return _Outcome("reset")

    # --- access token --------------------------------------------------------------------------

    async def _access_token(self) -> str | None:
        if self._get_token is None:
            return self._static_token
        if self._token is None or time.time() >= self._token_expires:
            token = self._get_token()
            if inspect.isawaitable(token):
                token = await token
            self._token = token
            self._token_expires = _refresh_at(token)
        return self._token

    # --- HTTP: long-poll, SSE, the head cursor -------------------------------------------------

    async def _headers(self, accept: str = "application/json") -> dict:
        headers = {"Accept": accept}
        token = await self._access_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def _get(self, path: str, params: dict, timeout: float | None = None):
        response = await self._http.get(f"{self.url}{API}{path}", params=_clean(params),
                                        headers=await self._headers(),
                                        timeout=timeout or self._connect_timeout)
        if response.status_code != 200:
            raise await self._failure(response)
        return response

    async def _failure(self, response: httpx.Response) -> _Outcome:
        try:
            error = response.json().get("error") or {}
        except (ValueError, AttributeError):
            error = {}
        retry_after = float(response.headers.get("Retry-After", "0") or 0) \
            if response.headers.get("Retry-After", "").isdigit() else 0.0
        if not error.get("code"):
            return _Outcome("refused")  # not our error shape: something in the way refused it
        if response.status_code == 410 and error["code"] == "cursor_expired":
            detail = (error.get("details") or [{}])[0]
            return await self._reset({"code": error["code"], "message": error.get("message"),
                                      "oldest_seq": detail.get("oldest_seq"),
                                      "epoch": detail.get("epoch")})
        if response.status_code == 401:
            return _Outcome("auth")
        if response.status_code == 429 or response.status_code >= 500:
            return _Outcome("retry", retry_after)
        if response.status_code in (403, 422):
            return _Outcome("fatal", error=RuntimeError(f"{error['code']}: {error.get('message')}"))
        return _Outcome("refused")

    def _resume_params(self) -> dict:
        return {"channels": ",".join(self._channels), "since": self.seq, "epoch": self.epoch}

    async def _run_poll(self) -> None:
        opened = False
        while True:
            # The first request answers at once, so a working long-poll shows as open at once.
            timeout = self._poll_timeout if opened else 0
            request = asyncio.ensure_future(self._get(
                "/poll", {**self._resume_params(), "timeout": timeout}, timeout + 15))
            changed = asyncio.ensure_future(self._changed.wait())
            try:
                await asyncio.wait({request, changed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed.cancel()
            if not request.done():
                request.cancel()  # channels changed: its cursor would not cover the new ones
                raise _Outcome("changed")
            try:
                body = request.result().json()
            except _Outcome as outcome:
                if opened and outcome.kind == "refused":
                    raise _Outcome("dropped")
                raise
            except (httpx.TransportError, OSError):
                if opened:
                    raise _Outcome("dropped")
                raise
            if not opened:
                opened = True
                self._opened("poll")
            self.epoch = body.get("epoch") or self.epoch
            for event in body["events"]:
                self._deliver(event, settled=True)
            if self.seq is None or body["cursor"] > self.seq:
                self.seq = body["cursor"]

    async def _run_sse(self) -> None:
        """Named events (`event: <type>`) read from the stream as text; resumes with `since`."""
        async with self._http.stream(
                "GET", f"{self.url}{API}/stream", params=_clean(self._resume_params()),
                headers=await self._headers("text/event-stream")) as response:
            if response.status_code != 200:
                await response.aread()
                raise await self._failure(response)
            if not response.headers.get("Content-Type", "").startswith("text/event-stream"):
                raise _Outcome("refused")
            self._opened("sse")
            try:
                await self._read_sse(response)
            except (httpx.TransportError, OSError) as exc:
                raise _Outcome("dropped", error=exc) from None

    async def _read_sse(self, response) -> None:
        lines = response.aiter_lines()
        name, data = "message", []
        while True:
            line = await self._within(lines.__anext__(), SILENCE)
            if line == "":
                if data:
                    await self._sse_message(name, "\n".join(data))
                name, data = "message", []
            elif not line.startswith(":"):
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "event":
                    name = value
                elif field == "data":
                    data.append(value)

    async def _within(self, awaitable, seconds: float):
        """Awaits a read, unless the channels change (then `changed`) or nothing comes."""
        read = _quiet(asyncio.ensure_future(awaitable))
        changed = asyncio.ensure_future(self._changed.wait())
        try:
            done, _ = await asyncio.wait({read, changed}, timeout=seconds,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
        if read not in done:
            read.cancel()
            raise _Outcome("changed" if changed in done else "dropped")
        try:
            return read.result()
        except StopAsyncIteration:
            raise _Outcome("dropped") from None

    async def _sse_message(self, name: str, data: str) -> None:
        payload = json.loads(data)
        if name == "epoch":
            self.epoch = payload.get("epoch") or self.epoch
            if self.seq is None and isinstance(payload.get("cursor"), int):
                self._start_at(payload["cursor"])
        elif name == "error":
            if payload.get("code") == "cursor_expired":
                raise await self._reset(payload)
            raise _Outcome("retry")
        else:
            self._deliver(payload, settled=True)

    async def _run_websocket(self) -> None:
        url = "ws" + self.url[4:] + API + "/ws"
        try:
            ws = await ws_connect(url, open_timeout=self._connect_timeout, **self._ws_options)
        except InvalidStatus as exc:
            status = exc.response.status_code
            retry_after = exc.response.headers.get("Retry-After", "")
            if status in (429, 503):
                raise _Outcome("retry", float(retry_after) if retry_after.isdigit() else 0.0)
            raise _Outcome("refused", error=exc)
        async with ws:
            try:
                await self._websocket_session(ws)
            except (WebSocketException, OSError) as exc:
                raise _Outcome("dropped", error=exc) from None  # it was open: back off, same kind

    async def _websocket_session(self, ws) -> None:
        """Authenticates with an `auth` op, subscribes from the cursor, then pings: the server
        answers ops in order, so the pong means the replay is done and the cursor may move."""
        ping_ref = 0
        settled = False
        highest = self.seq

        async def subscribe(channels):
            nonlocal ping_ref, settled
            if not channels:
                return
            op = {"op": "subscribe", "channels": channels, "since": self.seq, "ref": "sub"}
            if self.epoch:
                op["epoch"] = self.epoch
            await ws.send(json.dumps(op))
            settled = False
            ping_ref += 1
            await ws.send(json.dumps({"op": "ping", "ref": ping_ref}))

        token = await self._access_token()
        if token:
            await ws.send(json.dumps({"op": "auth", "token": token, "ref": "auth"}))
        sent_token = token
        self._changes = asyncio.Queue()  # the first subscribe has every channel
        await subscribe(list(self._channels))
        self._opened("websocket")
        while True:
            while not self._changes.empty():
                added, removed = self._changes.get_nowait()
                if removed:
                    await ws.send(json.dumps({"op": "unsubscribe", "channels": removed}))
                await subscribe(added)
            token = await self._access_token()
            if token and token != sent_token:  # refreshed: the connection is told the new one
                await ws.send(json.dumps({"op": "auth", "token": token, "ref": "auth"}))
                sent_token = token
            try:
                message = await self._ws_receive(ws)
            except _Outcome as outcome:
                if outcome.kind == "changed":
                    continue  # applied at the top of the loop
                raise
            if message is None:
                await ws.send(json.dumps({"op": "ping", "ref": "heartbeat"}))
                continue
            frame = json.loads(message)
            kind = frame.get("type")
            if kind == "event":
                event = frame["event"]
                if highest is None or event["seq"] > highest:
                    highest = event["seq"]
                self._deliver(event, settled)
            elif kind == "subscribed":
                self.epoch = frame.get("epoch") or self.epoch
            elif kind == "pong" and frame.get("ref") == ping_ref:
                settled = True
                if highest is not None and (self.seq is None or highest > self.seq):
                    self.seq = highest
            elif kind == "error":
                code = frame.get("code")
                if code == "cursor_expired":
                    raise await self._reset(frame)
                if code == "unauthorized":
                    raise _Outcome("auth")
                if code in ("service_unavailable", "rate_limited"):
                    raise _Outcome("retry")
                self._report(RuntimeError(f"{code}: {frame.get('message')}"))

    async def _ws_receive(self, ws):
        """The next message; None after HEARTBEAT seconds of silence (time for a ping)."""
        receive = _quiet(asyncio.ensure_future(ws.recv()))
        changed = asyncio.ensure_future(self._changed.wait())
        try:
            done, _ = await asyncio.wait({receive, changed}, timeout=HEARTBEAT,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
        if receive in done:
            return receive.result()
        receive.cancel()
        if changed in done:
            self._changed.clear()
            raise _Outcome("changed")
        return None


def _quiet(future: asyncio.Future) -> asyncio.Future:
    """A read that may be abandoned (cancelled with the client): its error is not news."""
    future.add_done_callback(lambda done: done.cancelled() or done.exception())
    return future


def _clean(params: dict) -> dict:
    return {key: value for key, value in params.items() if value is not None}


def _refresh_at(token: str) -> float:
    """When to fetch a new token: at 80% of its life (at most a minute early), from its JWT
    claims; an opaque token is kept until the server refuses it."""
    try:
        part = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        expires = float(claims["exp"])
        life = expires - float(claims.get("iat", expires - 300))
    except (IndexError, KeyError, ValueError, TypeError):
        return float("inf")
    return expires - min(60.0, life * 0.2)
