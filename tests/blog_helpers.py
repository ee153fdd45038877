"""Helpers the blog tests share: creating posts and checking validation errors."""

from bson import ObjectId

from tests.conftest import assert_error

POSTS = "/api/v1/posts"
MALFORMED_IDS = ["abc", "zzzzzzzzzzzzzzzzzzzzzzzz", "0" * 23, "0" * 25, "%24ne", "null"]


async def create_post(api, token, **fields):
    body = {"title": "Hello", "content": "World", **fields}
    response = await api.post(POSTS, body, token=token)
    assert response.code == 201, response.body
    return response.json


def unknown_id() -> str:
    return str(ObjectId())


def assert_validation(response, loc):
    """422 validation_error whose details name `loc` among {loc, msg} entries."""
    assert_error(response, 422, "validation_error")
    details = response.json["error"]["details"]
    assert details and all(set(d) == {"loc", "msg"} for d in details), details
    assert all(isinstance(d["msg"], str) and d["msg"] for d in details), details
    assert list(loc) in [d["loc"] for d in details], details
