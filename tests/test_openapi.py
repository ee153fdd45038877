"""/openapi.json against the route table and the pydantic models, and /docs served from our own assets."""

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import jsonschema
import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator

from tests.conftest import assert_error
from tornado_app.web.routes import ROUTES
from tornado_app.web.openapi import METHODS, path_template
from tornado_app.schemas.common import ErrorResponse

REF = "#/components/schemas/{model}"
ERROR_REF = "#/components/schemas/ErrorResponse"


def _declared():
    """(path, method) -> Operation for every handler method with an @operation, from ROUTES."""
    found = {}
    for pattern, handler, *_ in ROUTES:
        for method in METHODS:
            spec = getattr(getattr(handler, method, None), "__operation__", None)
            if spec is not None:
                found[(path_template(pattern), method)] = spec
    return found


def _model_schema(model, mode: str) -> tuple[dict, dict]:
    schema = model.model_json_schema(mode=mode, ref_template=REF)
    return schema, schema.pop("$defs", {})


def _resolve(document: dict, ref: str) -> dict:
    assert ref.startswith("#/components/schemas/"), ref
    return document["components"]["schemas"][ref.rsplit("/", 1)[1]]


def _assert_is_model(document: dict, ref: str, model, mode: str) -> None:
    """The component behind `ref` is exactly the model's own JSON schema (and so are its parts)."""
    schema, defs = _model_schema(model, mode)
    assert _resolve(document, ref) == schema, (ref, model)
    for name, sub in defs.items():
        assert document["components"]["schemas"][name] == sub, (name, model)


def _validate(document: dict, ref: str, instance) -> None:
    """Validates a real response against a schema of the document (JSON Schema 2020-12)."""
    root = {"$ref": ref, "components": document["components"]}
    jsonschema.Draft202012Validator(root).validate(instance)


@pytest.fixture
def document(io_loop, api):
    response = io_loop.run_sync(lambda: api.get("/openapi.json"))
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    return response.json


@pytest.mark.gen_test
async def test_document_is_valid_openapi_3_1(document):
    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"] and document["info"]["version"]
    errors = list(OpenAPIV31SpecValidator(document).iter_errors())
    assert errors == [], [str(e)[:300] for e in errors]


@pytest.mark.gen_test
async def test_every_declared_operation_and_nothing_else_is_documented(document):
    declared = _declared()
    assert declared, "no @operation found in ROUTES"
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert documented == set(declared)
    operation_ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(operation_ids) == len(set(operation_ids))
    for (path, method), spec in declared.items():
        op = document["paths"][path][method]
        assert op["summary"] == spec.summary
        for status in spec.responses:
            assert str(status) in op["responses"], (path, method, status)


@pytest.mark.gen_test
async def test_path_parameters_match_the_route_groups(document):
    for (path, method), _ in _declared().items():
        names = {part[1:-1] for part in path.split("/") if part.startswith("{")}
        params = document["paths"][path][method].get("parameters", [])
        in_path = {p["name"] for p in params if p["in"] == "path"}
        assert in_path == names, (path, method)
        assert all(p["required"] for p in params if p["in"] == "path")
        if names:
            assert "404" in document["paths"][path][method]["responses"], (path, method)


@pytest.mark.gen_test
async def test_query_parameters_come_from_the_query_models(document):
    for (path, method), spec in _declared().items():
        if spec.query is None:
            continue
        schema = spec.query.model_json_schema(mode="validation")
        params = {p["name"]: p for p in document["paths"][path][method]["parameters"]
                  if p["in"] == "query"}
        assert set(params) == set(schema["properties"]), (path, method)
        for name, prop in schema["properties"].items():
            assert params[name]["schema"] == prop
            assert params[name]["required"] == (name in schema.get("required", []))
        assert "422" in document["paths"][path][method]["responses"]


@pytest.mark.gen_test
async def test_request_bodies_are_the_models_the_handlers_validate_with(document):
    checked = 0
    for (path, method), spec in _declared().items():
        op = document["paths"][path][method]
        if spec.body is None:
            assert "requestBody" not in op, (path, method)
            continue
        media = "application/x-www-form-urlencoded" if spec.form else "application/json"
        assert op["requestBody"]["required"] is True
        assert list(op["requestBody"]["content"]) == [media], (path, method)
        _assert_is_model(document, op["requestBody"]["content"][media]["schema"]["$ref"],
                         spec.body, "validation")
        for status in ("400", "413", "415", "422"):
            assert status in op["responses"], (path, method, status)
        checked += 1
    assert checked >= 10
    # Spot checks that the generated schemas carry the contract's rules.
    schemas = document["components"]["schemas"]
    assert schemas["PostCreate"]["additionalProperties"] is False
    assert schemas["ProductCreate"]["properties"]["price_cents"]["maximum"] == 1_000_000_000
    assert schemas["RegisterRequest"]["properties"]["username"]["pattern"] == r"^[A-Za-z0-9_.-]+$"


@pytest.mark.gen_test
async def test_success_responses_are_the_response_models(document):
    for (path, method), spec in _declared().items():
        op = document["paths"][path][method]
        for status, model in spec.responses.items():
            entry = op["responses"][str(status)]
            if model is None and getattr(spec, "stream", False) and 200 <= status < 300:
                assert list(entry["content"]) == ["text/event-stream"], (path, method, status)
            elif model is None:
                assert "content" not in entry, (path, method, status)
            else:
                _assert_is_model(document, entry["content"]["application/json"]["schema"]["$ref"],
                                 model, "serialization")


@pytest.mark.gen_test
async def test_security_requirements_follow_the_declared_auth(document):
    scheme = document["components"]["securitySchemes"]["OAuth2PasswordBearer"]
    assert scheme["type"] == "oauth2"
    token_url = scheme["flows"]["password"]["tokenUrl"]
    assert token_url == "/api/v1/auth/token"
    # "Authorize" posts the OAuth2 password grant as a form: the endpoint must take one.
    token_op = document["paths"][token_url]["post"]
    assert "application/x-www-form-urlencoded" in token_op["requestBody"]["content"]
    assert "security" not in token_op
    for (path, method), spec in _declared().items():
        op = document["paths"][path][method]
        if spec.auth in ("bearer", "admin"):
            assert op["security"] == [{"OAuth2PasswordBearer": []}], (path, method)
            assert "401" in op["responses"], (path, method)
        elif spec.auth == "optional":
            assert {} in op["security"] and {"OAuth2PasswordBearer": []} in op["security"]
        else:
            assert "security" not in op, (path, method)
        if spec.auth == "admin":
            assert "403" in op["responses"], (path, method)
    ops = document["paths"]
    assert ops["/api/v1/products"]["post"]["security"] == [{"OAuth2PasswordBearer": []}]
    assert "security" not in ops["/api/v1/products"]["get"]
    assert "403" in ops["/api/v1/users"]["get"]["responses"]


def _call(api, path: str, method: str, token: str | None = None):
    """The operation at `path` on a resource that does not exist, with an empty JSON body."""
    url = re.sub(r"\{\w+\}", "0" * 24, path)
    body = {} if method in ("post", "put", "patch") else None
    return api.request(method.upper(), url, json_body=body, token=token)


def _with_auth(*kinds):
    return sorted((path, method) for (path, method), spec in _declared().items()
                  if spec.auth in kinds)


@pytest.mark.gen_test
async def test_every_operation_declared_bearer_or_admin_is_401_without_a_token(api):
    operations = _with_auth("bearer", "admin")
    assert len(operations) >= 17
    for path, method in operations:
        response = await _call(api, path, method)
        assert_error(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), (path, method)


@pytest.mark.gen_test
async def test_every_operation_declared_admin_is_403_for_a_user(api):
    token = await api.user_token()
    operations = _with_auth("admin")
    assert operations
    for path, method in operations:
        assert_error(await _call(api, path, method, token), 403, "forbidden")


@pytest.mark.gen_test
async def test_operations_declared_bearer_let_a_user_in(api):
    """Past the auth check, a missing resource or an empty body is what answers."""
    token = await api.user_token()
    logout = ("/api/v1/auth/logout", "post")  # revokes the token: last
    operations = sorted(_with_auth("bearer"), key=lambda op: op == logout)
    assert operations[-1] == logout
    for path, method in operations:
        response = await _call(api, path, method, token)
        assert response.code not in (401, 403), (path, method, response.code, response.body)


@pytest.mark.gen_test
async def test_operations_declared_without_auth_or_optional_need_no_token(api):
    for path, method in _with_auth(None, "optional"):
        response = await _call(api, path, method)
        assert response.code != 401, (path, method, response.body)


@pytest.mark.gen_test
async def test_every_error_response_uses_the_one_error_schema(document):
    _assert_is_model(document, ERROR_REF, ErrorResponse, "serialization")
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            assert "default" in op["responses"], (path, method)
            assert "503" in op["responses"], (path, method)
            for status, entry in op["responses"].items():
                if status == "default" or int(status) >= 400:
                    assert entry["content"] == {"application/json": {"schema": {"$ref": ERROR_REF}}}, \
                        (path, method, status)
                    assert entry["description"]


@pytest.mark.gen_test
async def test_real_responses_match_their_documented_schemas(document, api, server):
    def schema_of(path, method, status):
        return document["paths"][path][method]["responses"][str(status)]["content"][
            "application/json"]["schema"]["$ref"]

    response = await api.get("/health")
    _validate(document, schema_of("/health", "get", 200), response.json)
    user = await api.register("alice")
    _validate(document, schema_of("/api/v1/auth/register", "post", 201), user)
    tokens = await api.login("alice")
    _validate(document, schema_of("/api/v1/auth/login", "post", 200), tokens)
    token = tokens["access_token"]
    form = await api.post("/api/v1/auth/token", body="grant_type=password&username=alice&password=password123",
                          content_type="application/x-www-form-urlencoded")
    assert form.code == 200
    _validate(document, schema_of("/api/v1/auth/token", "post", 200), form.json)
    post = await api.post("/api/v1/posts", {"title": "t", "content": "c", "tags": ["a"]}, token=token)
    _validate(document, schema_of("/api/v1/posts", "post", 201), post.json)
    page = await api.get("/api/v1/posts")
    _validate(document, schema_of("/api/v1/posts", "get", 200), page.json)
    comment = await api.post(f"/api/v1/posts/{post.json['id']}/comments", {"body": "hi"}, token=token)
    _validate(document, schema_of("/api/v1/posts/{post_id}/comments", "post", 201), comment.json)
    admin = await api.admin_token(server)
    product = await api.post("/api/v1/products", {"sku": "SKU-1", "name": "n", "category": "c",
                                                  "price_cents": 5}, token=admin)
    _validate(document, schema_of("/api/v1/products", "post", 201), product.json)
    users = await api.get("/api/v1/users", token=admin)
    _validate(document, schema_of("/api/v1/users", "get", 200), users.json)

    errors = [
        await api.get("/api/v1/posts/" + "0" * 24),
        await api.get("/api/v1/posts?limit=1000"),
        await api.post("/api/v1/posts", {"title": ""}, token=token),
        await api.post("/api/v1/posts", body=b"{", content_type="application/json", token=token),
        await api.post("/api/v1/posts", {"title": "t", "content": "c"}),
        await api.post("/api/v1/products", {"sku": "SKU-2"}, token=token),
        await api.post("/api/v1/posts", body="x", content_type="text/plain", token=token),
    ]
    assert [r.code for r in errors] == [404, 422, 422, 400, 401, 403, 415]
    for response in errors:
        _validate(document, ERROR_REF, response.json)
    assert errors[1].json["error"]["details"][0]["loc"] == ["query", "limit"]


@pytest.mark.gen_test
async def test_document_is_the_same_on_every_fetch(api):
    first = await api.get("/openapi.json")
    second = await api.get("/openapi.json")
    assert first.body == second.body


CONTRACT_ENDPOINTS = {
    ("/health", "get"), ("/health/ready", "get"),
    ("/api/v1/auth/register", "post"), ("/api/v1/auth/login", "post"), ("/api/v1/auth/token", "post"),
    ("/api/v1/auth/refresh", "post"), ("/api/v1/auth/logout", "post"),
    ("/api/v1/users/me", "get"), ("/api/v1/users", "get"), ("/api/v1/users/{user_id}", "patch"),
    ("/api/v1/posts", "post"), ("/api/v1/posts", "get"), ("/api/v1/posts/{post_id}", "get"),
    ("/api/v1/posts/{post_id}", "put"), ("/api/v1/posts/{post_id}", "patch"),
    ("/api/v1/posts/{post_id}", "delete"), ("/api/v1/posts/{post_id}/comments", "post"),
    ("/api/v1/posts/{post_id}/comments", "get"), ("/api/v1/comments/{comment_id}", "delete"),
    ("/api/v1/products", "get"), ("/api/v1/products", "post"), ("/api/v1/products/{product_id}", "get"),
    ("/api/v1/products/{product_id}", "put"), ("/api/v1/products/{product_id}", "patch"),
    ("/api/v1/products/{product_id}", "delete"), ("/api/v1/products/{product_id}/stock", "post"),
    ("/api/v1/ws", "get"), ("/api/v1/poll", "get"), ("/api/v1/stream", "get"),
    ("/api/v1/notifications", "post"), ("/api/v1/notifications", "get"),
    ("/api/v1/notifications/{notification_id}", "get"),
    ("/api/v1/notifications/{notification_id}/read", "post"),
}


@pytest.mark.gen_test
async def test_every_endpoint_of_the_contract_is_documented(document):
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert CONTRACT_ENDPOINTS - documented == set()


# --- /docs ---------------------------------------------------------------------------------------

class _Assets(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0
        self._in_script_without_src = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            if attrs.get("src"):
                self.urls.append(attrs["src"])
            else:
                self._in_script_without_src = True
        elif tag == "link" and attrs.get("href"):
            self.urls.append(attrs["href"])
        elif tag in ("img", "iframe") and attrs.get("src"):
            self.urls.append(attrs["src"])

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script_without_src = False

    def handle_data(self, data):
        if self._in_script_without_src and data.strip():
            self.inline_scripts += 1


async def _raw_get(api, path: str):
    """A GET whose body is not JSON (the Api helper parses every body as JSON)."""
    return await api.http.fetch(api.base_url + path, raise_error=False)


def _csp(header: str) -> dict:
    out = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            out[words[0]] = words[1:]
    return out


@pytest.mark.gen_test
async def test_docs_page_loads_only_assets_the_server_serves_itself(api):
    response = await _raw_get(api, "/docs")
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    html = response.body.decode()
    assert "swagger-ui" in html
    parser = _Assets()
    parser.feed(html)
    assert parser.inline_scripts == 0, "the CSP forbids inline scripts, so the page must not need one"
    scripts = [u for u in parser.urls if u.endswith(".js")]
    styles = [u for u in parser.urls if u.endswith(".css")]
    assert scripts and styles, parser.urls
    for url in parser.urls:
        absolute = urljoin(api.base_url + "/docs", url)
        parts = urlsplit(absolute)
        assert (parts.scheme, parts.netloc) == ("http", urlsplit(api.base_url).netloc), url
        asset = await _raw_get(api, parts.path + (f"?{parts.query}" if parts.query else ""))
        assert asset.code == 200, url
        assert len(asset.body) > 0, url
        if url.endswith(".js"):
            assert "javascript" in asset.headers["Content-Type"], url
        elif url.endswith(".css"):
            assert asset.headers["Content-Type"].startswith("text/css"), url
        assert asset.headers.get("X-Content-Type-Options") == "nosniff", url
        assert "Content-Security-Policy" in asset.headers, url
    init = await _raw_get(api, "/docs/init.js")
    assert b"/openapi.json" in init.body


@pytest.mark.gen_test
async def test_docs_has_a_strict_csp_that_still_lets_the_page_work(api):
    response = await _raw_get(api, "/docs")
    policy = _csp(response.headers["Content-Security-Policy"])
    scripts = policy.get("script-src", policy.get("default-src"))
    assert scripts == ["'self'"], policy
    assert "'unsafe-inline'" not in scripts and "'unsafe-eval'" not in scripts
    for directive, sources in policy.items():
        for source in sources:
            assert "://" not in source and source != "*", (directive, source)
    assert policy.get("frame-ancestors") == ["'none'"]
    # Swagger UI fetches the document and calls the API on the same origin.
    assert "'self'" in policy.get("connect-src", policy.get("default-src"))
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.gen_test
async def test_docs_asset_outside_the_package_is_not_served(api):
    response = await _raw_get(api, "/docs/static/..%2F..%2F..%2Fsetup.cfg")
    assert response.code in (403, 404)
    assert b"[metadata]" not in response.body
    missing = await _raw_get(api, "/docs/static/nope.js")
    assert missing.code == 404


@pytest.mark.gen_test
async def test_unknown_route_is_404_in_the_error_shape(api):
    assert_error(await api.get("/openapi.yaml"), 404, "not_found")


@pytest.mark.gen_test
async def test_every_post_declares_idempotency_key_and_its_errors(document):
    posts = [(path, ops["post"]) for path, ops in document["paths"].items() if "post" in ops]
    assert len(posts) == sum(1 for (_, method) in _declared() if method == "post")
    for path, op in posts:
        header = [p for p in op["parameters"] if p["in"] == "header"
                  and p["name"] == "Idempotency-Key"]
        assert len(header) == 1, path
        assert header[0]["required"] is False
        assert (header[0]["schema"]["minLength"], header[0]["schema"]["maxLength"]) == (1, 255)
        assert "request_in_progress" in op["responses"]["409"]["description"], path
        assert "idempotency_key_reused" in op["responses"]["422"]["description"], path
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            if method != "post":
                assert "Idempotency-Key" not in [p["name"] for p in op.get("parameters", [])]
