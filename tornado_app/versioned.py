"""Versioned documents: every change bumps `version` in the same atomic update that makes it.

With If-Match the update is conditional on the version, so of two writers holding the same
ETag exactly one wins and the other gets 412 with nothing written.
"""

from pymongo import ReturnDocument

from .clock import utcnow
from .errors import not_found, precondition_failed
from .etags import ANY


async def update_versioned(collection, oid, changes: dict, expected, what: str,
                           extra_filter: dict | None = None) -> dict:
    """Applies `changes` ($set) to one document; `expected` is the parsed If-Match (or None)."""
    query = {"_id": oid, **(extra_filter or {})}
    if expected is not None and expected != ANY:
        query["version"] = {"$in": sorted(expected)}
    update = {"$set": {**changes, "updated_at": utcnow()}, "$inc": {"version": 1}}
    doc = await collection.find_one_and_update(query, update, return_document=ReturnDocument.AFTER)
    if doc is not None:
        return doc
    if expected is not None and await collection.find_one({"_id": oid}, {"_id": 1}):
        raise precondition_failed()
    raise not_found(what)
