"""Tornado API server: blog, product catalog and auth, with realtime delivery of every change."""

__version__ = "0.1.0"
