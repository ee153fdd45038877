"""The realtime transports, one module per kind of connection: each owns its connection from the
request that opens it to its close (WebSocket, Server-Sent Events, long-poll)."""
