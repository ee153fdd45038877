"""Product catalog models. Money is whole cents."""

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .common import PageQuery, RequestModel, ResponseModel, query_int

Sku = Annotated[str, Field(min_length=3, max_length=32, pattern=r"^[A-Z0-9-]+$")]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Description = Annotated[str, Field(max_length=10_000)]
Category = Annotated[str, Field(min_length=1, max_length=64)]
Price = Annotated[int, Field(ge=0, le=1_000_000_000)]
Stock = Annotated[int, Field(ge=0, le=1_000_000_000)]


class ProductCreate(RequestModel):
    sku: Sku
    name: Name
    description: Description = ""
    category: Category
    price_cents: Price
    stock: Stock = 0


class ProductReplace(RequestModel):
    """PUT: every editable field, all required, so a replace never zeroes the stock by omission."""

    sku: Sku
    name: Name
    description: Description
    category: Category
    price_cents: Price
    stock: Stock


class ProductPatch(RequestModel):
    sku: Sku | None = None
    name: Name | None = None
    description: Description | None = None
    category: Category | None = None
    price_cents: Price | None = None
    stock: Stock | None = None


class StockChange(RequestModel):
    delta: Annotated[int, Field(ge=-1_000_000_000, le=1_000_000_000)]

    @model_validator(mode="after")
    def _non_zero(self):
        if self.delta == 0:
            raise ValueError("delta must not be zero")
        return self


class ProductListQuery(PageQuery):
    category: str | None = Field(None, max_length=64)
    q: str | None = Field(None, max_length=200)
    min_price_cents: query_int(0, 1_000_000_000) | None = None
    max_price_cents: query_int(0, 1_000_000_000) | None = None
    in_stock: bool | None = None
    sort: Literal["-created_at", "price", "-price", "name"] = "-created_at"

    @model_validator(mode="after")
    def _price_range(self):
        if (self.min_price_cents is not None and self.max_price_cents is not None
                and self.min_price_cents > self.max_price_cents):
            raise ValueError("min_price_cents must not be above max_price_cents")
        return self


class ProductPublic(ResponseModel):
    id: str
    sku: str
    name: str
    description: str
    category: str
    price_cents: int
    stock: int
    version: int
    created_at: str
    updated_at: str
