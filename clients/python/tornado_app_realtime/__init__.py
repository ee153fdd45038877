"""Realtime client of the tornado-app API on asyncio: events as an async iterator, exactly once
and in order, resumed after any drop, over WebSocket, Server-Sent Events or long-poll."""

from .client import RealtimeClient, Status

__all__ = ["RealtimeClient", "Status"]
__version__ = "1.0.0"
