"""Pydantic models, one per use: what a request may carry and what a response shows."""
