"""The product catalog as the contract describes it: shape, validation, auth, versions, stock."""

import asyncio
import base64
import itertools
import json
import re
from urllib.parse import urlencode

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from tests.conftest import assert_error

PRODUCTS = "/api/v1/products"
UNKNOWN_ID = "0123456789abcdef01234567"
MALFORMED_IDS = ["not-an-id", "123", "zzzzzzzzzzzzzzzzzzzzzzzz", "0123456789abcdef0123456789"]
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
PRODUCT_FIELDS = {"id", "sku", "name", "description", "category", "price_cents", "stock",
                  "version", "created_at", "updated_at"}

_sku_numbers = itertools.count(1)


def product_body(**overrides) -> dict:
    body = {"sku": f"SKU-{next(_sku_numbers)}", "name": "Widget", "description": "A widget",
            "category": "tools", "price_cents": 1999, "stock": 5}
    body.update(overrides)
    return body


async def create(api, token, **overrides) -> dict:
    response = await api.post(PRODUCTS, product_body(**overrides), token=token)
    assert response.code == 201, response.body
    return response.json


async def fetch(api, product_id) -> dict:
    response = await api.get(f"{PRODUCTS}/{product_id}")
    assert response.code == 200, response.body
    return response.json


async def listing(api, **params) -> dict:
    response = await api.get(f"{PRODUCTS}?{urlencode(params)}")
    assert response.code == 200, response.body
    return response.json


async def page_through(api, **params) -> list[dict]:
    items, cursor, pages = [], None, 0
    while True:
        query = dict(params, **({"cursor": cursor} if cursor else {}))
        page = await listing(api, **query)
        assert len(page["items"]) <= int(params.get("limit", 20))
        items.extend(page["items"])
        pages += 1
        assert pages < 50, "pagination does not end"
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def ids(items) -> list[str]:
    return [item["id"] for item in items]


def names(page) -> set[str]:
    return {item["name"] for item in page["items"]}


@pytest.fixture
def admin(io_loop, api, server):
    return io_loop.run_sync(lambda: api.admin_token(server, "admin"))


@pytest.fixture
def user(io_loop, api):
    return io_loop.run_sync(lambda: api.user_token("alice"))


# --- create and read ---------------------------------------------------------------------------

@pytest.mark.gen_test
async def test_create_returns_201_with_the_product_location_and_etag(api, admin):
    body = product_body(sku="ABC-123")
    response = await api.post(PRODUCTS, body, token=admin)
    assert response.code == 201, response.body
    product = response.json
    assert set(product) == PRODUCT_FIELDS
    assert {k: product[k] for k in body} == body
    assert type(product["price_cents"]) is int and type(product["stock"]) is int
    assert product["version"] == 1
    assert ISO_UTC.match(product["created_at"]) and product["updated_at"] == product["created_at"]
    assert re.fullmatch(r"[0-9a-f]{24}", product["id"])
    assert response.headers["Location"] == f"{PRODUCTS}/{product['id']}"
    assert response.headers["ETag"] == '"1"'


@pytest.mark.gen_test
async def test_create_defaults_description_to_empty_and_stock_to_zero(api, admin):
    body = {"sku": "DEF-1", "name": "Bare", "category": "misc", "price_cents": 0}
    response = await api.post(PRODUCTS, body, token=admin)
    assert response.code == 201, response.body
    assert response.json["description"] == ""
    assert response.json["stock"] == 0


@pytest.mark.gen_test
async def test_get_returns_the_product_with_its_etag(api, admin):
    created = await create(api, admin)
    response = await api.get(f"{PRODUCTS}/{created['id']}")
    assert response.code == 200
    assert response.json == created
    assert response.headers["ETag"] == '"1"'


@pytest.mark.gen_test
async def test_reads_need_no_token(api, admin):
    created = await create(api, admin)
    assert (await api.get(PRODUCTS)).code == 200
    assert (await api.get(f"{PRODUCTS}/{created['id']}")).code == 200


@pytest.mark.gen_test
async def test_unknown_product_is_404(api):
    assert_error(await api.get(f"{PRODUCTS}/{UNKNOWN_ID}"), 404, "not_found")


@pytest.mark.gen_test
@pytest.mark.parametrize("bad_id", MALFORMED_IDS)
async def test_malformed_id_is_404_on_read(api, bad_id):
    assert_error(await api.get(f"{PRODUCTS}/{bad_id}"), 404, "not_found")


@pytest.mark.gen_test
@pytest.mark.parametrize("product_id", [UNKNOWN_ID, *MALFORMED_IDS])
@pytest.mark.parametrize("method,suffix,body", [
    ("PUT", "", product_body(sku="PUT-1")),
    ("PATCH", "", {"name": "x"}),
    ("DELETE", "", None),
    ("POST", "/stock", {"delta": 1}),
])
async def test_unknown_or_malformed_id_is_404_on_every_write(api, admin, product_id, method,
                                                             suffix, body):
    response = await api.request(method, f"{PRODUCTS}/{product_id}{suffix}", json_body=body,
                                 token=admin)
    assert_error(response, 404, "not_found")


# --- validation --------------------------------------------------------------------------------

INVALID_FIELDS = [
    ("sku", "AB"), ("sku", "A" * 33), ("sku", "abc-1"), ("sku", "AB_1"), ("sku", "AB 1"),
    ("sku", ""), ("sku", 123),
    ("name", ""), ("name", "n" * 201), ("name", None),
    ("description", "d" * 10_001), ("description", None),
    ("category", ""), ("category", "c" * 65),
    ("price_cents", -1), ("price_cents", 1_000_000_001), ("price_cents", 100.0),
    ("price_cents", 19.99), ("price_cents", "100"), ("price_cents", True),
    ("stock", -1), ("stock", 1_000_000_001), ("stock", 1.5), ("stock", "5"),
]


@pytest.mark.gen_test
@pytest.mark.parametrize("field,value", INVALID_FIELDS)
async def test_create_rejects_each_invalid_field_with_422_naming_it(api, admin, field, value):
    response = await api.post(PRODUCTS, product_body(**{field: value}), token=admin)
    assert_error(response, 422, "validation_error")
    assert [d["loc"] for d in response.json["error"]["details"]] == [["body", field]]
    assert all(isinstance(d["msg"], str) and d["msg"] for d in response.json["error"]["details"])
    assert (await listing(api))["items"] == []


@pytest.mark.gen_test
@pytest.mark.parametrize("missing", ["sku", "name", "category", "price_cents"])
async def test_create_requires_each_required_field(api, admin, missing):
    body = product_body()
    del body[missing]
    response = await api.post(PRODUCTS, body, token=admin)
    assert_error(response, 422, "validation_error")
    assert [d["loc"] for d in response.json["error"]["details"]] == [["body", missing]]


@pytest.mark.gen_test
async def test_create_accepts_every_boundary_value(api, admin):
    low = product_body(sku="ABC", name="n", description="", category="c", price_cents=0, stock=0)
    high = product_body(sku="Z" * 31 + "9", name="n" * 200, description="d" * 10_000,
                        category="c" * 64, price_cents=1_000_000_000, stock=1_000_000_000)
    for body in (low, high):
        response = await api.post(PRODUCTS, body, token=admin)
        assert response.code == 201, response.body
        assert {k: response.json[k] for k in body} == body


@pytest.mark.gen_test
async def test_unknown_field_is_422_with_details_naming_it(api, admin):
    response = await api.post(PRODUCTS, product_body(colour="red"), token=admin)
    assert_error(response, 422, "validation_error")
    assert response.json["error"]["details"] == [{"loc": ["body", "colour"],
                                                  "msg": "unknown field"}]


@pytest.mark.gen_test
async def test_create_with_wrong_content_type_is_415(api, admin):
    response = await api.post(PRODUCTS, body=json.dumps(product_body()), token=admin,
                              content_type="text/plain")
    assert_error(response, 415, "unsupported_media_type")


@pytest.mark.gen_test
@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", '"text"', ""])
async def test_create_with_a_body_that_is_not_a_json_object_is_400(api, admin, raw):
    response = await api.post(PRODUCTS, body=raw, token=admin, content_type="application/json")
    assert_error(response, 400, "invalid_json")


@pytest.mark.gen_test
async def test_duplicate_sku_on_create_is_409_conflict(api, admin):
    await create(api, admin, sku="DUP-1")
    response = await api.post(PRODUCTS, product_body(sku="DUP-1", name="Other"), token=admin)
    assert_error(response, 409, "conflict")
    assert [item["name"] for item in (await listing(api))["items"]] == ["Widget"]


# --- auth on writes ----------------------------------------------------------------------------

WRITES = [
    ("POST", "", lambda: product_body()),
    ("PUT", "/{id}", lambda: product_body()),
    ("PATCH", "/{id}", lambda: {"name": "Hacked"}),
    ("DELETE", "/{id}", lambda: None),
    ("POST", "/{id}/stock", lambda: {"delta": -1}),
]


@pytest.mark.gen_test
@pytest.mark.parametrize("method,path,body", WRITES)
async def test_every_write_without_a_token_is_401(api, admin, method, path, body):
    created = await create(api, admin)
    response = await api.request(method, PRODUCTS + path.format(id=created["id"]),
                                 json_body=body())
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await listing(api))["items"] == [created]


@pytest.mark.gen_test
@pytest.mark.parametrize("method,path,body", WRITES)
async def test_every_write_by_a_non_admin_is_403_and_changes_nothing(
        api, admin, user, method, path, body):
    created = await create(api, admin)
    response = await api.request(method, PRODUCTS + path.format(id=created["id"]),
                                 json_body=body(), token=user)
    assert_error(response, 403, "forbidden")
    assert (await listing(api))["items"] == [created]


# --- PUT, PATCH and DELETE ---------------------------------------------------------------------

@pytest.mark.gen_test
async def test_put_replaces_every_editable_field_and_bumps_the_version(api, admin):
    created = await create(api, admin)
    replacement = {"sku": "NEW-SKU", "name": "Gadget", "description": "new", "category": "toys",
                   "price_cents": 5, "stock": 9}
    response = await api.put(f"{PRODUCTS}/{created['id']}", replacement, token=admin)
    assert response.code == 200, response.body
    product = response.json
    assert {k: product[k] for k in replacement} == replacement
    assert product["version"] == 2
    assert response.headers["ETag"] == '"2"'
    assert product["created_at"] == created["created_at"]
    assert product["updated_at"] >= created["updated_at"]
    assert await fetch(api, created["id"]) == product


@pytest.mark.gen_test
async def test_put_without_description_or_stock_is_422_and_changes_nothing(api, admin):
    created = await create(api, admin, description="old", stock=7)
    replacement = {"sku": created["sku"], "name": "Gadget", "category": "toys", "price_cents": 5}
    response = await api.put(f"{PRODUCTS}/{created['id']}", replacement, token=admin)
    assert_error(response, 422, "validation_error")
    assert {d["loc"][-1] for d in response.json["error"]["details"]} == {"description", "stock"}
    assert await fetch(api, created["id"]) == created


@pytest.mark.gen_test
async def test_put_requires_every_required_field(api, admin):
    created = await create(api, admin)
    response = await api.put(f"{PRODUCTS}/{created['id']}", {"name": "Only"}, token=admin)
    assert_error(response, 422, "validation_error")
    assert await fetch(api, created["id"]) == created


@pytest.mark.gen_test
async def test_patch_changes_only_the_given_fields_and_bumps_the_version(api, admin):
    created = await create(api, admin)
    response = await api.patch(f"{PRODUCTS}/{created['id']}", {"price_cents": 2500}, token=admin)
    assert response.code == 200, response.body
    product = response.json
    assert product["price_cents"] == 2500
    assert product["version"] == 2
    assert response.headers["ETag"] == '"2"'
    unchanged = PRODUCT_FIELDS - {"price_cents", "version", "updated_at"}
    assert {k: product[k] for k in unchanged} == {k: created[k] for k in unchanged}
    assert await fetch(api, created["id"]) == product


@pytest.mark.gen_test
@pytest.mark.parametrize("field,value", INVALID_FIELDS)
async def test_patch_rejects_each_invalid_field(api, admin, field, value):
    created = await create(api, admin)
    response = await api.patch(f"{PRODUCTS}/{created['id']}", {field: value}, token=admin)
    assert_error(response, 422, "validation_error")
    assert [d["loc"] for d in response.json["error"]["details"]] == [["body", field]]
    assert await fetch(api, created["id"]) == created


@pytest.mark.gen_test
async def test_patch_with_an_empty_body_is_422(api, admin):
    created = await create(api, admin)
    response = await api.patch(f"{PRODUCTS}/{created['id']}", {}, token=admin)
    assert_error(response, 422, "validation_error")


@pytest.mark.gen_test
async def test_patch_with_an_unknown_field_is_422_naming_it(api, admin):
    created = await create(api, admin)
    response = await api.patch(f"{PRODUCTS}/{created['id']}", {"colour": "red"}, token=admin)
    assert_error(response, 422, "validation_error")
    assert response.json["error"]["details"] == [{"loc": ["body", "colour"],
                                                  "msg": "unknown field"}]


@pytest.mark.gen_test
async def test_patch_to_another_products_sku_is_409_conflict_and_changes_nothing(api, admin):
    await create(api, admin, sku="TAKEN-1")
    other = await create(api, admin, sku="MINE-1")
    response = await api.patch(f"{PRODUCTS}/{other['id']}", {"sku": "TAKEN-1", "name": "New"},
                               token=admin)
    assert_error(response, 409, "conflict")
    assert await fetch(api, other["id"]) == other


@pytest.mark.gen_test
async def test_put_to_another_products_sku_is_409_conflict(api, admin):
    await create(api, admin, sku="TAKEN-1")
    other = await create(api, admin, sku="MINE-1")
    response = await api.put(f"{PRODUCTS}/{other['id']}", product_body(sku="TAKEN-1"),
                             token=admin)
    assert_error(response, 409, "conflict")
    assert await fetch(api, other["id"]) == other


@pytest.mark.gen_test
async def test_patch_keeping_its_own_sku_is_no_conflict(api, admin):
    created = await create(api, admin, sku="SAME-1")
    response = await api.patch(f"{PRODUCTS}/{created['id']}", {"sku": "SAME-1"}, token=admin)
    assert response.code == 200, response.body


@pytest.mark.gen_test
async def test_delete_is_204_and_the_product_is_gone(api, admin):
    created = await create(api, admin)
    response = await api.delete(f"{PRODUCTS}/{created['id']}", token=admin)
    assert response.code == 204
    assert not response.body
    assert_error(await api.get(f"{PRODUCTS}/{created['id']}"), 404, "not_found")
    assert_error(await api.delete(f"{PRODUCTS}/{created['id']}", token=admin), 404, "not_found")


@pytest.mark.gen_test
async def test_a_deleted_products_sku_can_be_used_again(api, admin):
    created = await create(api, admin, sku="REUSE-1")
    assert (await api.delete(f"{PRODUCTS}/{created['id']}", token=admin)).code == 204
    await create(api, admin, sku="REUSE-1")


# --- If-Match ----------------------------------------------------------------------------------

@pytest.mark.gen_test
async def test_patch_with_the_current_if_match_succeeds(api, admin):
    created = await create(api, admin)
    response = await api.patch(f"{PRODUCTS}/{created['id']}", {"name": "New"}, token=admin,
                               headers={"If-Match": '"1"'})
    assert response.code == 200, response.body
    assert response.json["version"] == 2


@pytest.mark.gen_test
async def test_patch_with_a_stale_if_match_is_412_and_nothing_is_written(api, admin):
    created = await create(api, admin)
    updated = (await api.patch(f"{PRODUCTS}/{created['id']}", {"name": "V2"}, token=admin)).json
    response = await api.patch(f"{PRODUCTS}/{created['id']}", {"name": "Lost"}, token=admin,
                               headers={"If-Match": '"1"'})
    assert_error(response, 412, "precondition_failed")
    assert await fetch(api, created["id"]) == updated


@pytest.mark.gen_test
async def test_put_with_a_stale_if_match_is_412_and_nothing_is_written(api, admin):
    created = await create(api, admin)
    response = await api.put(f"{PRODUCTS}/{created['id']}", product_body(name="Lost"),
                             token=admin, headers={"If-Match": '"7"'})
    assert_error(response, 412, "precondition_failed")
    assert await fetch(api, created["id"]) == created


@pytest.mark.gen_test
async def test_if_match_on_an_unknown_product_is_404(api, admin):
    response = await api.patch(f"{PRODUCTS}/{UNKNOWN_ID}", {"name": "x"}, token=admin,
                               headers={"If-Match": '"1"'})
    assert_error(response, 404, "not_found")


@pytest.mark.gen_test
async def test_two_concurrent_writers_with_the_same_if_match_exactly_one_wins(api, admin):
    created = await create(api, admin)
    url = f"{PRODUCTS}/{created['id']}"
    first, second = await asyncio.gather(
        api.patch(url, {"name": "First"}, token=admin, headers={"If-Match": '"1"'}),
        api.put(url, product_body(sku=created["sku"], name="Second"), token=admin,
                headers={"If-Match": '"1"'}))
    assert sorted([first.code, second.code]) == [200, 412]
    winner, loser = (first, second) if first.code == 200 else (second, first)
    assert_error(loser, 412, "precondition_failed")
    assert await fetch(api, created["id"]) == winner.json
    assert winner.json["version"] == 2


# --- stock -------------------------------------------------------------------------------------

@pytest.mark.gen_test
async def test_stock_delta_changes_the_stock_and_bumps_the_version(api, admin):
    created = await create(api, admin, stock=5)
    url = f"{PRODUCTS}/{created['id']}/stock"
    response = await api.post(url, {"delta": -2}, token=admin)
    assert response.code == 200, response.body
    assert response.json["stock"] == 3
    assert response.json["version"] == 2
    assert response.headers["ETag"] == '"2"'
    response = await api.post(url, {"delta": 10}, token=admin)
    assert response.json["stock"] == 13
    assert set(response.json) == PRODUCT_FIELDS


@pytest.mark.gen_test
@pytest.mark.parametrize("delta", [0, 1.0, -1.5, "1", True, None, [1], 1_000_000_001])
async def test_stock_delta_must_be_a_non_zero_integer(api, admin, delta):
    created = await create(api, admin, stock=5)
    response = await api.post(f"{PRODUCTS}/{created['id']}/stock", {"delta": delta},
                              token=admin)
    assert_error(response, 422, "validation_error")
    assert response.json["error"]["details"]
    assert await fetch(api, created["id"]) == created


@pytest.mark.gen_test
async def test_stock_change_without_delta_is_422(api, admin):
    created = await create(api, admin)
    response = await api.post(f"{PRODUCTS}/{created['id']}/stock", {}, token=admin)
    assert_error(response, 422, "validation_error")


@pytest.mark.gen_test
async def test_stock_change_with_an_unknown_field_is_422(api, admin):
    created = await create(api, admin)
    response = await api.post(f"{PRODUCTS}/{created['id']}/stock", {"delta": 1, "why": "x"},
                              token=admin)
    assert_error(response, 422, "validation_error")
    assert response.json["error"]["details"] == [{"loc": ["body", "why"], "msg": "unknown field"}]


@pytest.mark.gen_test
async def test_removing_stock_from_zero_is_409_insufficient_stock_and_nothing_changes(api, admin):
    created = await create(api, admin, stock=0)
    response = await api.post(f"{PRODUCTS}/{created['id']}/stock", {"delta": -1}, token=admin)
    assert_error(response, 409, "insufficient_stock")
    assert await fetch(api, created["id"]) == created


@pytest.mark.gen_test
async def test_removing_more_than_in_stock_is_409_and_nothing_changes(api, admin):
    created = await create(api, admin, stock=3)
    response = await api.post(f"{PRODUCTS}/{created['id']}/stock", {"delta": -4}, token=admin)
    assert_error(response, 409, "insufficient_stock")
    assert await fetch(api, created["id"]) == created


@pytest.mark.gen_test
async def test_adding_stock_past_the_maximum_is_422_and_nothing_changes(api, admin):
    created = await create(api, admin, stock=1_000_000_000)
    response = await api.post(f"{PRODUCTS}/{created['id']}/stock", {"delta": 1}, token=admin)
    assert_error(response, 422, "validation_error")
    assert await fetch(api, created["id"]) == created


@pytest.mark.gen_test(timeout=60)
async def test_100_concurrent_decrements_on_a_stock_of_50_give_50_successes_and_50_insufficient(
        api, admin):
    created = await create(api, admin, stock=50)
    # A client of its own, so all 100 requests are really in flight at once.
    http = AsyncHTTPClient(force_instance=True, max_clients=100)
    url = f"{api.base_url}{PRODUCTS}/{created['id']}/stock"
    request = HTTPRequest(url, method="POST", body=json.dumps({"delta": -1}),
                          headers={"Authorization": f"Bearer {admin}",
                                   "Content-Type": "application/json"}, request_timeout=60)
    try:
        responses = await asyncio.gather(
            *(http.fetch(request, raise_error=False) for _ in range(100)))
    finally:
        http.close()
    codes = [response.code for response in responses]
    assert codes.count(200) == 50, codes
    assert codes.count(409) == 50, codes
    for response in responses:
        if response.code == 409:
            assert json.loads(response.body)["error"]["code"] == "insufficient_stock"
    stocks = sorted(json.loads(r.body)["stock"] for r in responses if r.code == 200)
    assert stocks == list(range(50))
    product = await fetch(api, created["id"])
    assert product["stock"] == 0
    assert product["version"] == 51


# --- listing: filters --------------------------------------------------------------------------

@pytest.mark.gen_test
async def test_list_is_a_page_with_next_cursor_null_on_the_last_page(api, admin):
    created = await create(api, admin)
    page = await listing(api)
    assert page == {"items": [created], "next_cursor": None}


@pytest.mark.gen_test
async def test_list_of_nothing_is_an_empty_page(api):
    assert await listing(api) == {"items": [], "next_cursor": None}


@pytest.mark.gen_test
async def test_list_limit_defaults_to_20(api, admin):
    for _ in range(21):
        await create(api, admin)
    page = await listing(api)
    assert len(page["items"]) == 20
    assert page["next_cursor"]


@pytest.mark.gen_test
async def test_category_filter_matches_exactly(api, admin):
    await create(api, admin, name="Hammer", category="tools")
    await create(api, admin, name="Drill", category="tools")
    await create(api, admin, name="Ball", category="toys")
    await create(api, admin, name="Other", category="Tools")
    assert names(await listing(api, category="tools")) == {"Hammer", "Drill"}
    assert names(await listing(api, category="tool")) == set()


@pytest.mark.gen_test
async def test_q_matches_names_containing_it_case_insensitively(api, admin):
    await create(api, admin, name="Red Widget")
    await create(api, admin, name="widget stand")
    await create(api, admin, name="Gadget")
    assert names(await listing(api, q="WIDGET")) == {"Red Widget", "widget stand"}
    assert names(await listing(api, q="ADG")) == {"Gadget"}


@pytest.mark.gen_test
@pytest.mark.parametrize("q,expected", [
    (".*", {"A.*B"}),
    ("(", {"Widget (large)"}),
    (".", {"A.*B"}),
    ("[", set()),
    ("\\", set()),
    ("^Plain$", set()),
    ("+", {"C++ Book"}),
])
async def test_q_matches_regex_metacharacters_literally(api, admin, q, expected):
    for name in ("A.*B", "Widget (large)", "Plain", "C++ Book"):
        await create(api, admin, name=name)
    assert names(await listing(api, q=q)) == expected


@pytest.mark.gen_test
async def test_price_range_filters_are_inclusive(api, admin):
    for price in (100, 200, 300, 400):
        await create(api, admin, name=str(price), price_cents=price)
    assert names(await listing(api, min_price_cents=200)) == {"200", "300", "400"}
    assert names(await listing(api, max_price_cents=200)) == {"100", "200"}
    assert names(await listing(api, min_price_cents=200, max_price_cents=300)) == {"200", "300"}
    assert names(await listing(api, min_price_cents=300, max_price_cents=300)) == {"300"}


@pytest.mark.gen_test
async def test_min_price_above_max_price_is_422(api):
    response = await api.get(f"{PRODUCTS}?min_price_cents=300&max_price_cents=200")
    assert_error(response, 422, "validation_error")


@pytest.mark.gen_test
@pytest.mark.parametrize("query", [
    "min_price_cents=-1", "max_price_cents=1000000001", "min_price_cents=abc",
    "max_price_cents=1.5", "in_stock=maybe", "category=" + "c" * 65,
])
async def test_invalid_filter_values_are_422(api, query):
    response = await api.get(f"{PRODUCTS}?{query}")
    assert_error(response, 422, "validation_error")
    assert response.json["error"]["details"][0]["loc"][0] == "query"


@pytest.mark.gen_test
async def test_in_stock_true_lists_only_products_with_stock(api, admin):
    await create(api, admin, name="Some", stock=3)
    await create(api, admin, name="None", stock=0)
    assert names(await listing(api, in_stock="true")) == {"Some"}


@pytest.mark.gen_test
async def test_filters_combine(api, admin):
    await create(api, admin, name="Blue Pen", category="office", price_cents=150, stock=1)
    await create(api, admin, name="Red Pen", category="office", price_cents=150, stock=0)
    await create(api, admin, name="Gold Pen", category="office", price_cents=9000, stock=1)
    await create(api, admin, name="Pen Toy", category="toys", price_cents=150, stock=1)
    await create(api, admin, name="Stapler", category="office", price_cents=150, stock=1)
    page = await listing(api, category="office", q="pen", max_price_cents=1000, in_stock="true")
    assert names(page) == {"Blue Pen"}


@pytest.mark.gen_test
@pytest.mark.parametrize("query", [
    "category[$ne]=x", "category[$regex]=.*", "q=.*", "q[$regex]=.*",
    "min_price_cents[$gt]=0", "max_price_cents[$lt]=100000", "in_stock[$ne]=true",
    "category=%7B%22%24ne%22%3A%22x%22%7D", "sort[$ne]=name", "limit[$gt]=0",
    "cursor[$ne]=x", "$where=1", "category=x&category[$ne]=x",
])
async def test_query_string_operator_injection_never_gives_500_nor_applies(api, admin, query):
    await create(api, admin, name="In X", category="x", price_cents=10)
    await create(api, admin, name="In Y", category="y", price_cents=20)
    response = await api.get(f"{PRODUCTS}?{query}")
    assert response.code in (200, 422), (response.code, response.body)
    if response.code == 422:
        assert_error(response, 422, "validation_error")
        return
    found = names(response.json)
    # An operator taken at face value would select only "In Y" (or nothing for q=.*).
    assert found in ({"In X", "In Y"}, {"In X"}, set()), found
    if query == "q=.*":
        assert found == set()


# --- listing: sorts and pagination -------------------------------------------------------------

async def seed_for_sorting(api, admin) -> list[dict]:
    """Nine products with ties in price, so the _id tie-break is crossed by page boundaries."""
    specs = [("Mango", 300), ("apple", 100), ("Banana", 300), ("Cherry", 100), ("Date", 200),
             ("Elder", 300), ("Fig", 100), ("Grape", 500), ("Kiwi", 200)]
    return [await create(api, admin, name=name, price_cents=price) for name, price in specs]


SORT_KEYS = {
    "-created_at": (lambda p: (p["created_at"], p["id"]), True),
    "price": (lambda p: (p["price_cents"], p["id"]), False),
    "-price": (lambda p: (p["price_cents"], p["id"]), True),
    "name": (lambda p: (p["name"], p["id"]), False),
}


@pytest.mark.gen_test
async def test_default_sort_is_newest_first(api, admin):
    created = await seed_for_sorting(api, admin)
    page = await listing(api)
    assert ids(page["items"]) == ids(reversed(created))


@pytest.mark.gen_test
@pytest.mark.parametrize("sort", list(SORT_KEYS))
@pytest.mark.parametrize("limit", [1, 2, 4])
async def test_each_sort_pages_through_everything_in_order_without_skips_or_repeats(
        api, admin, sort, limit):
    created = await seed_for_sorting(api, admin)
    key, descending = SORT_KEYS[sort]
    expected = sorted(created, key=key, reverse=descending)
    items = await page_through(api, sort=sort, limit=limit)
    assert ids(items) == ids(expected)


@pytest.mark.gen_test
async def test_sort_by_name_is_by_name(api, admin):
    await seed_for_sorting(api, admin)
    items = (await listing(api, sort="name"))["items"]
    assert [item["name"] for item in items] == sorted(item["name"] for item in items)
    assert items[0]["name"] == "Banana"


@pytest.mark.gen_test
async def test_price_sorts_order_by_price(api, admin):
    await seed_for_sorting(api, admin)
    ascending = [item["price_cents"] for item in (await listing(api, sort="price"))["items"]]
    descending = [item["price_cents"] for item in (await listing(api, sort="-price"))["items"]]
    assert ascending == sorted(ascending) and ascending[0] == 100
    assert descending == sorted(descending, reverse=True) and descending[0] == 500


@pytest.mark.gen_test
async def test_filters_and_sort_page_together(api, admin):
    created = await seed_for_sorting(api, admin)
    items = await page_through(api, sort="price", limit=2, min_price_cents=200)
    expected = sorted((p for p in created if p["price_cents"] >= 200),
                      key=SORT_KEYS["price"][0])
    assert ids(items) == ids(expected)


@pytest.mark.gen_test
async def test_paging_while_others_insert_neither_skips_nor_repeats(api, admin):
    created = await seed_for_sorting(api, admin)
    seen, cursor = [], None
    while True:
        page = await listing(api, limit=2, **({"cursor": cursor} if cursor else {}))
        seen.extend(page["items"])
        await create(api, admin, name="Inserted meanwhile", price_cents=250)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert ids(seen) == ids(reversed(created))


@pytest.mark.gen_test
async def test_paging_by_price_while_others_insert_neither_skips_nor_repeats(api, admin):
    created = await seed_for_sorting(api, admin)
    seen, cursor = [], None
    while True:
        page = await listing(api, sort="price", limit=2, **({"cursor": cursor} if cursor else {}))
        seen.extend(page["items"])
        await create(api, admin, name="Cheap meanwhile", price_cents=1)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    originals = {p["id"] for p in created}
    seen_originals = [p for p in seen if p["id"] in originals]
    assert ids(seen_originals) == ids(sorted(created, key=SORT_KEYS["price"][0]))
    assert len(ids(seen)) == len(set(ids(seen)))


@pytest.mark.gen_test
@pytest.mark.parametrize("sort", ["created_at", "-name", "PRICE", "", "price,name", "stock"])
async def test_an_unknown_sort_is_422(api, sort):
    response = await api.get(f"{PRODUCTS}?{urlencode({'sort': sort})}")
    assert_error(response, 422, "validation_error")
    assert response.json["error"]["details"][0]["loc"] == ["query", "sort"]


def b64(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


GARBAGE_CURSORS = [
    "garbage", "!!!", "%%%", "e30", "x" * 513, b64(["products-created_at", 1]),
    b64(["products-created_at", {"t": 1}, "not-an-id"]), b64({"a": 1, "b": 2, "c": 3}),
    b64("text"), b64(None), b64(["products-created_at", [1], "0123456789abcdef01234567"]),
    b64(["products-created_at", {"t": 10 ** 20}, "0123456789abcdef01234567"]),
    b64(["products-created_at", {"t": -10 ** 20}, "0123456789abcdef01234567"]),
    b64(["productsprice", 10 ** 30, "0123456789abcdef01234567"]),
    b64(["productsprice", True, "0123456789abcdef01234567"]),
    "\u00e9\u00e9\u00e9",
]


@pytest.mark.gen_test
@pytest.mark.parametrize("cursor", GARBAGE_CURSORS)
async def test_a_garbage_cursor_is_422(api, admin, cursor):
    await create(api, admin)
    sort = "price" if "productsprice" in base64_text(cursor) else "-created_at"
    response = await api.get(f"{PRODUCTS}?{urlencode({'cursor': cursor, 'sort': sort})}")
    assert_error(response, 422, "validation_error")
    assert response.json["error"]["details"][0]["loc"] == ["query", "cursor"]


def base64_text(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except ValueError:
        return ""


@pytest.mark.gen_test
async def test_a_cursor_from_another_sort_is_422(api, admin):
    for _ in range(3):
        await create(api, admin)
    cursor = (await listing(api, sort="price", limit=1))["next_cursor"]
    response = await api.get(f"{PRODUCTS}?{urlencode({'cursor': cursor, 'sort': 'name'})}")
    assert_error(response, 422, "validation_error")


@pytest.mark.gen_test
@pytest.mark.parametrize("limit", ["0", "101", "-1", "abc", "1.5", ""])
async def test_a_limit_outside_1_to_100_is_422(api, limit):
    response = await api.get(f"{PRODUCTS}?limit={limit}")
    assert_error(response, 422, "validation_error")
    assert response.json["error"]["details"][0]["loc"] == ["query", "limit"]


@pytest.mark.gen_test
@pytest.mark.parametrize("limit", [1, 100])
async def test_limits_1_and_100_are_accepted(api, admin, limit):
    await create(api, admin)
    await create(api, admin)
    page = await listing(api, limit=limit)
    assert len(page["items"]) == min(limit, 2)
    assert (page["next_cursor"] is None) == (limit == 100)
