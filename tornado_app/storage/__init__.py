"""The database and what every store shares: the outbox, versioned updates, pages, idempotency."""
