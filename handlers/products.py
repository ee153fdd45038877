"""Product catalog endpoints: public reads, admin writes, stock changes."""

from tornado_app.web.openapi import operation
from tornado_app.catalog.products import product_public
from tornado_app.schemas.common import Page, patch_changes
from tornado_app.schemas.products import (ProductCreate, ProductListQuery, ProductPatch,
                                          ProductPublic, ProductReplace, StockChange)

from .base import BaseHandler


class ProductsHandler(BaseHandler):
    route_name = "products.list"

    @operation(summary="List products", query=ProductListQuery, responses={200: Page[ProductPublic]},
               tag="products")
    async def get(self) -> None:
        params = self.query()
        page = await self.ctx.products.list(**params.model_dump())
        self.send_json(page.to_json(product_public))

    @operation(summary="Create a product", body=ProductCreate, responses={201: ProductPublic}, auth="admin",
               errors=(409,), tag="products")
    async def post(self) -> None:
        body = self.json_body()
        doc = await self.ctx.products.create(body.model_dump(), op_id=self.op_id)
        self.set_header("Location", f"/api/v1/products/{doc['_id']}")
        self.send_versioned(doc, product_public, status=201)


class ProductHandler(BaseHandler):
    route_name = "products.item"

    @operation(summary="A product, with its ETag", responses={200: ProductPublic, 304: None},
               if_none_match=True, tag="products")
    async def get(self, product_id: str) -> None:
        self.send_versioned(await self.ctx.products.get(product_id), product_public)

    @operation(summary="Replace a product", body=ProductReplace, responses={200: ProductPublic}, auth="admin",
               errors=(409,), if_match=True, tag="products")
    async def put(self, product_id: str) -> None:
        await self._update(product_id, replace=True)

    @operation(summary="Change some of a product's fields", body=ProductPatch, responses={200: ProductPublic},
               auth="admin", errors=(409,), if_match=True, tag="products")
    async def patch(self, product_id: str) -> None:
        await self._update(product_id, replace=False)

    async def _update(self, product_id: str, replace: bool) -> None:
        body = self.json_body()
        changes = body.model_dump() if replace else patch_changes(body)
        doc = await self.ctx.products.update(product_id, changes, self.if_match())
        self.send_versioned(doc, product_public)

    @operation(summary="Delete a product", responses={204: None}, auth="admin", tag="products")
    async def delete(self, product_id: str) -> None:
        await self.ctx.products.delete(product_id)
        self.send_empty()


class StockHandler(BaseHandler):
    route_name = "products.stock"

    @operation(summary="Change the stock atomically", body=StockChange, responses={200: ProductPublic},
               auth="admin", errors=(409,), tag="products")
    async def post(self, product_id: str) -> None:
        body = self.json_body()
        doc = await self.ctx.products.change_stock(product_id, body.delta, op_id=self.op_id)
        self.send_versioned(doc, product_public)
