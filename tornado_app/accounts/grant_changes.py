"""The news that a token family was revoked or a user's role changed, kept in the database so
that every worker hears it (tornado_app/realtime/grants.py reads it for open connections).

Why a collection of its own rather than asking the families and users collections about every
open connection: FerretDB 1.24 answers only `_id` equality from an index; an `$in` over the
families of a few thousand connections scans the whole collection once per batch (measured:
about 25 s per pass for 10,000 connections over 30,000 families). This collection holds the
last couple of minutes of changes, so reading all of it is one small scan per pass.
"""

from datetime import timedelta

from ..core.clock import utcnow

COLLECTION = "grant_changes"
# How long news is kept (purged by the maintenance pass, every minute): every pass of every
# worker reads all of it, so it is kept short. A worker that could not read it for longer than
# this (less the readers' overlap) checks all its connections against the families and users
# collections instead. Changes made to those collections by hand, outside the API, are not news:
# insert `{"family": <id>, "at": <now>}` or `{"user_id": "<id>", "at": <now>}` here too.
RETAIN_SECONDS = 120.0


async def record(db, **what) -> None:
    """`family=<id>` (revoked) or `user_id=<id>` (role changed)."""
    await db[COLLECTION].insert_one({**what, "at": utcnow()})


async def purge(db) -> None:
    await db[COLLECTION].delete_many({"at": {"$lt": utcnow() - timedelta(seconds=RETAIN_SECONDS)}})
