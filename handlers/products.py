"""Product catalog endpoints: public reads, admin writes, stock changes."""

from tornado_app.products import product_public
from tornado_app.schemas.common import patch_changes
from tornado_app.schemas.products import (
    ProductCreate, ProductListQuery, ProductPatch, ProductReplace, StockChange)

from .base import BaseHandler


class ProductsHandler(BaseHandler):
    route_name = "products.list"

    async def get(self) -> None:
        params = self.query(ProductListQuery)
        page = await self.ctx.products.list(**params.model_dump())
        self.send_json(page.to_json(product_public))

    async def post(self) -> None:
        await self.require_admin()
        body = self.json_body(ProductCreate)
        doc = await self.ctx.products.create(body.model_dump())
        self.set_header("Location", f"/api/v1/products/{doc['_id']}")
        self.send_versioned(doc, product_public, status=201)


class ProductHandler(BaseHandler):
    route_name = "products.item"

    async def get(self, product_id: str) -> None:
        self.send_versioned(await self.ctx.products.get(product_id), product_public)

    async def put(self, product_id: str) -> None:
        await self._update(product_id, ProductReplace, replace=True)

    async def patch(self, product_id: str) -> None:
        await self._update(product_id, ProductPatch, replace=False)

    async def _update(self, product_id: str, model, replace: bool) -> None:
        await self.require_admin()
        body = self.json_body(model)
        changes = body.model_dump() if replace else patch_changes(body)
        doc = await self.ctx.products.update(product_id, changes, self.if_match())
        self.send_versioned(doc, product_public)

    async def delete(self, product_id: str) -> None:
        await self.require_admin()
        await self.ctx.products.delete(product_id)
        self.send_empty()


class StockHandler(BaseHandler):
    route_name = "products.stock"

    async def post(self, product_id: str) -> None:
        await self.require_admin()
        body = self.json_body(StockChange)
        doc = await self.ctx.products.change_stock(product_id, body.delta)
        self.send_versioned(doc, product_public)
