"""The product catalog: admin-only writes, filters and sorts, and atomic stock changes."""

import re

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError, OperationFailure

from .clock import iso, utcnow
from .errors import ApiError, conflict, not_found, validation_error
from .ids import parse_id
from .pagination import fetch_page
from .versioned import update_versioned

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
    def __init__(self, db, events):
        self.products = db["products"]
        self.products_read = db.read("products")
        self.events = events

    async def create(self, fields: dict) -> dict:
        now = utcnow()
        doc = {**fields, "version": 1, "created_at": now, "updated_at": now}
        try:
            await self.products.insert_one(doc)
        except DuplicateKeyError:
            raise conflict("sku is already taken") from None
        await self.events.publish("products", "product.created", product_public(doc))
        return doc

    async def get(self, product_id: str) -> dict:
        oid = parse_id(product_id)
        doc = oid and await self.products_read.find_one({"_id": oid})
        if not doc:
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
            doc = await update_versioned(self.products, oid, changes, expected, "product")
        except OperationFailure as exc:
            # MongoDB reports a taken sku as DuplicateKeyError; FerretDB's findAndModify only
            # as a generic failure, so the database is asked whether that is what happened.
            if isinstance(exc, DuplicateKeyError) or (
                    "sku" in changes and await self.products.find_one(
                        {"sku": changes["sku"], "_id": {"$ne": oid}}, {"_id": 1})):
                raise conflict("sku is already taken") from None
            raise
        await self.events.publish("products", "product.updated", product_public(doc))
        return doc

    async def delete(self, product_id: str) -> None:
        oid = parse_id(product_id)
        deleted = oid and await self.products.delete_one({"_id": oid})
        if not deleted or not deleted.deleted_count:
            raise not_found("product")
        await self.events.publish("products", "product.deleted", {"id": str(oid)})

    async def change_stock(self, product_id: str, delta: int) -> dict:
        oid = parse_id(product_id)
        if oid is None:
            raise not_found("product")
        # One conditional $inc: the bound is checked and the change applied in the same
        # operation, so concurrent changes can never take the stock below zero.
        bound = {"$gte": -delta} if delta < 0 else {"$lte": MAX_STOCK - delta}
        doc = await self.products.find_one_and_update(
            {"_id": oid, "stock": bound},
            {"$inc": {"stock": delta, "version": 1}, "$set": {"updated_at": utcnow()}},
            return_document=ReturnDocument.AFTER)
        if doc is None:
            current = await self.products.find_one({"_id": oid}, {"stock": 1})
            if current is None:
                raise not_found("product")
            if delta < 0:
                raise ApiError(409, "insufficient_stock",
                               f"only {current['stock']} in stock, cannot remove {-delta}")
            raise validation_error(["body", "delta"], f"stock would exceed {MAX_STOCK}")
        await self.events.publish("products", "product.stock_changed", product_public(doc))
        return doc
