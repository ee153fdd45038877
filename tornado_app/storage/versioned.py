"""Versioned documents: every change bumps `version` in the same atomic update that makes it.

With If-Match the update is conditional on the version, so of two writers holding the same
ETag exactly one wins and the other gets 412 with nothing written. The update also appends the
change's pending event (tornado_app/storage/outbox.py), so the change and its event are one step.
"""

from bson import ObjectId

from ..core.clock import utcnow
from ..core.errors import not_found, precondition_failed
from ..core.etags import ANY
from .outbox import entry, is_live


async def update_versioned(outbox, name: str, oid, changes: dict, expected, what: str,
                           channel: str, event_type: str) -> dict:
    """Applies `changes` ($set) to one live document; `expected` is the parsed
    If-Match (or None). Returns the document after the change, its event already stored or
    left to the recovery sweep."""
    query = {"_id": oid}
    if expected is not None and expected != ANY:
        query["version"] = {"$in": sorted(expected)}
    cid = ObjectId()
    update = {"$set": {**changes, "updated_at": utcnow()}, "$inc": {"version": 1},
              "$push": {"_outbox": entry(channel, event_type, None, cid)}}
    doc = await outbox.update(name, query, update, cid, what)
    if doc is None:
        if expected is not None and is_live(await outbox.db[name].find_one({"_id": oid})):
            raise precondition_failed()
        raise not_found(what)
    await outbox.flush(name, doc)
    return doc
