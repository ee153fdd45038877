"""Thin HTTP and WebSocket handlers: they translate HTTP into calls into `tornado_app`."""
