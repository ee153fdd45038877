"""Fan-out between worker processes through Redis pub/sub.

Redis only carries news; the log stays the truth. Every worker publishes each event it stores,
and every worker feeds what it hears into its hub, which puts events in seq order and reads
anything it missed from the log. While Redis is unreachable the hub polls the log instead, so
subscribers keep receiving events, a little later, and nothing is silently lost.
"""

import asyncio
import json
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

CHANNEL = "tornado_app:events"
POLL_INTERVAL = 0.5


class RedisFanout:
    def __init__(self, url: str, hub, channel: str = CHANNEL):
        self.url = url
        self.hub = hub
        self.channel = channel
        self.connected = False
        self._client = aioredis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=None,
                                               health_check_interval=10)
        self._listener: asyncio.Task | None = None
        self._poller: asyncio.Task | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._listener = loop.create_task(self._listen())
        self._poller = loop.create_task(self._poll_while_disconnected())

    async def stop(self) -> None:
        for task in (self._listener, self._poller):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._listener, self._poller) if t),
                             return_exceptions=True)
        await self._client.aclose()

    def publish(self, event: dict) -> None:
        """Called by the event log for every event this worker stores."""
        asyncio.get_running_loop().create_task(self._publish(event))

    async def _publish(self, event: dict) -> None:
        try:
            await self._client.publish(self.channel, json.dumps(event, separators=(",", ":")))
        except (RedisError, OSError) as exc:
            # The other workers' hubs read it from the log instead.
            log.warning("could not publish seq %s to Redis: %s", event["seq"], exc)

    async def _listen(self) -> None:
        backoff = 0.2
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.connected = True
                backoff = 0.2
                log.info("listening for events on Redis")
                # Whatever was published while we were not listening comes from the log.
                await self.hub.poll_log()
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self.hub.on_event(json.loads(message["data"]))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.connected:
                    log.warning("lost Redis (%s); reading the log until it returns", exc)
                self.connected = False
            finally:
                try:
                    await pubsub.aclose()
                except Exception:
                    pass
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

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
