"""Fan-out between worker processes through Redis pub/sub.

Redis only carries news; the log stays the truth. Every worker publishes each event it stores,
and every worker feeds what it hears into its hub, which puts events in seq order and reads
anything it missed from the log. While Redis does not answer the hub polls the log instead, so
subscribers keep receiving events, a little later, and nothing is silently lost.

"Does not answer" includes a Redis that hangs without closing its connections (stopped,
swapped out, behind a dead link): a read on the pub/sub connection would wait forever for a
message that cannot come. So the listener reads with a short timeout, pings Redis on that same
connection whenever it has been quiet, and gives the connection up when a ping goes unanswered
for REDIS_TIMEOUT. Every command has the same timeout, so a publish cannot hang either.
"""

import asyncio
import json
import logging

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

CHANNEL = "tornado_app:events"
POLL_INTERVAL = 0.5
# Seconds Redis has to answer a command or a ping before it counts as gone.
REDIS_TIMEOUT = 2.0
# Seconds of silence on the pub/sub connection before it is pinged.
PING_AFTER = 1.0
# How long one read on the pub/sub connection waits before the listener looks at the clock.
READ_TICK = 0.25
# Publishes waiting for Redis at once; past that an event is left to the log (the other
# workers' hubs read it from there), instead of one more connection per event to a slow Redis.
MAX_PENDING_PUBLISHES = 100


class RedisUnresponsive(RedisError):
    pass


class RedisFanout:
    def __init__(self, url: str, hub, channel: str = CHANNEL):
        self.url = url
        self.hub = hub
        self.channel = channel
        # True while events from other workers arrive through Redis; False while they are
        # read from the log. `_known` is False until the first answer or failure.
        self.connected = False
        self._known = False
        self.pending_publishes = 0
        self._publish_failing = False
        # No retries inside the client: a failure is handled here, once, with the log as the
        # way round it, not by waiting longer on the same Redis.
        self._client = aioredis.Redis.from_url(
            url, socket_connect_timeout=REDIS_TIMEOUT, socket_timeout=REDIS_TIMEOUT,
            retry=Retry(NoBackoff(), 0))
        self._listener: asyncio.Task | None = None
        self._poller: asyncio.Task | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._listener = loop.create_task(self._listen())
        self._poller = loop.create_task(self._poll_while_disconnected())

    async def stop(self) -> None:
        tasks = [t for t in (self._listener, self._poller) if t is not None]
        # Cancelled until they end: Python 3.11's wait_for loses a cancellation that arrives as
        # the awaited call completes, and the listener then went on for good (a worker told to
        # stop just after it connected to Redis never exited).
        while any(not task.done() for task in tasks):
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=0.1)
        try:
            await asyncio.wait_for(self._client.aclose(), REDIS_TIMEOUT)
        except (asyncio.TimeoutError, RedisError, OSError):
            pass

    def state(self) -> str:
        """For /health/ready: how events from other workers reach this one."""
        return "ok" if self.connected else "unreachable: events are read from the log"

    # --- publishing ----------------------------------------------------------------------------

    def publish(self, event: dict) -> None:
        """Called by the event log for every event this worker stores."""
        if self.pending_publishes >= MAX_PENDING_PUBLISHES:
            self._publish_failed(event, "too many publishes waiting for Redis")
            return
        self.pending_publishes += 1
        asyncio.get_running_loop().create_task(self._publish(event))

    async def _publish(self, event: dict) -> None:
        try:
            await self._client.publish(self.channel, json.dumps(event, separators=(",", ":")))
            if self._publish_failing:
                self._publish_failing = False
                log.info("publishing events to Redis again")
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            self._publish_failed(event, exc)
        finally:
            self.pending_publishes -= 1

    def _publish_failed(self, event: dict, reason) -> None:
        # The other workers' hubs read it from the log instead. Logged once per outage: one
        # line per event would flood the log for as long as Redis is away.
        if not self._publish_failing:
            self._publish_failing = True
            log.warning("could not publish seq %s to Redis (%s); other workers read events "
                        "from the log until it answers", event["seq"], reason)

    # --- listening -----------------------------------------------------------------------------

    def _set_connected(self, connected: bool, reason=None) -> None:
        if self._known and connected == self.connected:
            return
        was_known, self._known, self.connected = self._known, True, connected
        if connected:
            log.info("listening for events on Redis")
        elif was_known:
            log.warning("lost Redis (%s); reading events from the log until it answers", reason)
        else:
            log.warning("Redis does not answer (%s); reading events from the log until it does",
                        reason)

    async def _listen(self) -> None:
        backoff = 0.2
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await asyncio.wait_for(pubsub.subscribe(self.channel), REDIS_TIMEOUT)
                await self._read(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.connected:
                    backoff = 0.2
                self._set_connected(False, str(exc) or type(exc).__name__)
            finally:
                try:
                    await asyncio.wait_for(pubsub.aclose(), REDIS_TIMEOUT)
                except Exception:
                    pass
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _read(self, pubsub) -> None:
        """Feeds the hub until the connection fails or Redis stops answering its pings."""
        loop = asyncio.get_running_loop()
        # The subscription counts once Redis answered on this connection: a first ping at once.
        await asyncio.wait_for(pubsub.ping(), REDIS_TIMEOUT)
        pinged = heard = loop.time()
        while True:
            message = await pubsub.get_message(timeout=READ_TICK)
            now = loop.time()
            if message is not None:
                heard, pinged = now, None
                if not self.connected:
                    self._set_connected(True)
                    # Whatever was published while we were not listening comes from the log.
                    try:
                        await self.hub.poll_log()
                    except Exception as exc:  # the database's trouble, not Redis's: a later
                        # event from Redis shows the hub the gap, and it reads it then
                        log.warning("could not read the event log: %s", exc)
                if message.get("type") == "message":
                    self._hand_to_hub(message["data"])
            elif pinged is not None:
                if now - pinged > REDIS_TIMEOUT:
                    raise RedisUnresponsive(f"no answer to a ping within {REDIS_TIMEOUT:g} s")
            elif now - heard >= PING_AFTER:
                await asyncio.wait_for(pubsub.ping(), REDIS_TIMEOUT)
                pinged = now

    def _hand_to_hub(self, data: bytes) -> None:
        try:
            event = json.loads(data)
            if not isinstance(event, dict) or not isinstance(event.get("seq"), int):
                raise ValueError("not an event")
        except ValueError as exc:
            # Something else published on our channel: not a reason to drop the connection
            # (the hub reads our own events from the log if one was really lost).
            log.warning("ignored a message on Redis channel %s that is not an event (%s): %.100r",
                        self.channel, exc, data)
            return
        self.hub.on_event(event)

    async def _poll_while_disconnected(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            if self.connected:
                continue
            try:
                while await self.hub.poll_log():
                    pass
            except Exception as exc:
                log.warning("could not read the event log: %s", exc)
