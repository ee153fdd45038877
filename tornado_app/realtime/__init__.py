"""Realtime delivery: the durable event log, the in-process hub, and the transports' shared parts."""
