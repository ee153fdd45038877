"""The product catalog: admin-only writes, filters and sorts, and atomic stock changes."""

import re

from bson import ObjectId
from pymongo.errors import DuplicateKeyError, OperationFailure

from ..core.clock import iso, utcnow
from ..core.errors import ApiError, conflict, not_found, validation_error
from ..core.ids import parse_id
from ..storage.outbox import Resource, entry, is_live
from ..storage.pagination import fetch_page
from ..storage.versioned import update_versioned

MAX_STOCK = 1_000_000_000

# sort parameter → (field, descending)
SORTS = {"-created_at": ("created_at", True), "price": ("price_cents", False),
         "-price": ("price_cents", True), "name": ("name", False)}


def product_public(doc: dict) -> dict:
    return {"id": str(doc["_id"]), "sku": doc["sku"], "name": doc["name"],
            "description": doc["description"], "category": doc["category"],
            "price_cents": doc["price_cents"], "stock": doc["stock"], "version": doc["version"],
            "created_at": iso(doc["created_at"]), "updated_at": iso(doc["updated_at"])}


class ProductStore:
    """Every change goes through the outbox (tornado_app/storage/outbox.py): the write carries its event."""

    def __init__(self, db, outbox):
        self.products = db["products"]
        self.products_read = db.read("products")
        self.db = db
        self.outbox = outbox
        outbox.register(Resource("products", product_public))

    async def create(self, fields: dict, op_id: ObjectId | None = None) -> dict:
        now = utcnow()
        doc = {"_id": op_id or ObjectId(), **fields, "version": 1, "created_at": now,
               "updated_at": now}
        doc["_outbox"] = [entry("products", "product.created", None, doc["_id"])]
        try:
            await self.outbox.insert("products", doc)
        except DuplicateKeyError:
            # The same operation retried (an Idempotency-Key: same _id), or a taken sku.
            existing = op_id and await self.outbox.existing("products", doc)
            if existing:
                return existing
            raise conflict("sku is already taken") from None
        await self.outbox.flush("products", doc)
        return doc

    async def get(self, product_id: str) -> dict:
        oid = parse_id(product_id)
        doc = oid and await self.db.find_by_id("products", oid)
        if not is_live(doc):
            raise not_found("product")
        return doc

    async def list(self, *, limit: int, cursor: str | None, category: str | None, q: str | None,
                   min_price_cents: int | None, max_price_cents: int | None, in_stock: bool | None,
                   sort: str):
        query: dict = {}
        if category is not None:
            query["category"] = category
        if q:
            # Escaped: the user's text is matched literally, never as a pattern.
            query["name"] = {"$regex": re.escape(q), "$options": "i"}
        price = {}
        if min_price_cents is not None:
            price["$gte"] = min_price_cents
        if max_price_cents is not None:
            price["$lte"] = max_price_cents
        if price:
            query["price_cents"] = price
        if in_stock is True:
            query["stock"] = {"$gt": 0}
        elif in_stock is False:
            query["stock"] = 0
        field, descending = SORTS[sort]
        return await fetch_page(self.products_read, query, field=field, descending=descending,
                                limit=limit, cursor=cursor, order=f"products{sort}")

    async def update(self, product_id: str, changes: dict, expected) -> dict:
        oid = parse_id(product_id)
        if oid is None:
            raise not_found("product")
        try:
            return await update_versioned(self.outbox, "products", oid, changes, expected,
                                          "product", "products", "product.updated")
        except OperationFailure as exc:
            # MongoDB reports a taken sku as DuplicateKeyError; FerretDB's findAndModify only
            # as a generic failure, so the database is asked whether that is what happened.
            if isinstance(exc, DuplicateKeyError) or (
                    "sku" in changes and await self.products.find_one(
                        {"sku": changes["sku"], "_id": {"$ne": oid}}, {"_id": 1})):
                raise conflict("sku is already taken") from None
            raise

    async def delete(self, product_id: str) -> None:
        oid = parse_id(product_id)
        if oid is None:
            raise not_found("product")
        cid = ObjectId()
        # A tombstone until its event is stored.
        doc = await self.outbox.update(
            "products", {"_id": oid},
            {"$set": {"_gone": True, "_gone_at": utcnow()},
             "$push": {"_outbox": entry("products", "product.deleted", {"id": str(oid)}, cid,
                                        gone=True)}}, cid, "product")
        if doc is None:
            raise not_found("product")
        await self.outbox.flush("products", doc)

    async def change_stock(self, product_id: str, delta: int, op_id: ObjectId | None = None) -> dict:
        oid = parse_id(product_id)
        if oid is None:
            raise not_found("product")
        cid = op_id or ObjectId()
        if op_id is not None:
            # A retry of a change that may have been applied (Idempotency-Key): applied once.
            done, current = await self.outbox.applied("products", oid, cid)
            if done and is_live(current):
                await self.outbox.flush("products", current)
                return current
        # One conditional $inc: the bound is checked and the change applied in the same
        # operation, so concurrent changes can never take the stock below zero.
        bound = {"$gte": -delta} if delta < 0 else {"$lte": MAX_STOCK - delta}
        doc = await self.outbox.update(
            "products", {"_id": oid, "stock": bound},
            {"$inc": {"stock": delta, "version": 1}, "$set": {"updated_at": utcnow()},
             "$push": {"_outbox": entry("products", "product.stock_changed", None, cid)}},
            cid, "product")
        if doc is None:
            current = await self.products.find_one({"_id": oid}, {"stock": 1, "_gone": 1})
            if not is_live(current):
                raise not_found("product")
            if delta < 0:
                raise ApiError(409, "insufficient_stock",
                               f"only {current['stock']} in stock, cannot remove {-delta}")
            raise validation_error(["body", "delta"], f"stock would exceed {MAX_STOCK}")
        await self.outbox.flush("products", doc)
        return doc
