"""The news that a token family was revoked or a user's role changed, kept in the database so
that every worker hears it (tornado_app/realtime/grants.py reads it for open connections).

Why a collection of its own rather than asking the families and users collections about every
open connection: FerretDB 1.24 answers only `_id` equality from an index; an `$in` over the
families of a few thousand connections scans the whole collection once per batch (measured:
about 25 s per pass for 10,000 connections over 30,000 families). This collection holds the
last few minutes of changes, so reading all of it is one small scan per pass.
"""

from datetime import timedelta

from .clock import utcnow

COLLECTION = "grant_changes"
# How long news is kept. A worker that could not read it for longer than this (RETAIN minus
# the readers' overlap) re-checks every connection it holds one by one instead.
RETAIN_SECONDS = 300.0


async def record(db, **what) -> None:
    """`family=<id>` (revoked) or `user_id=<id>` (role changed)."""
    await db[COLLECTION].insert_one({**what, "at": utcnow()})


async def purge(db) -> None:
    await db[COLLECTION].delete_many({"at": {"$lt": utcnow() - timedelta(seconds=RETAIN_SECONDS)}})
