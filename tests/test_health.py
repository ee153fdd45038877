import asyncio

import pytest

from tests.conftest import assert_error


@pytest.mark.gen_test
async def test_health_answers_ok(api):
    response = await api.get("/health")
    assert response.code == 200
    assert response.json == {"status": "ok"}


@pytest.mark.gen_test
async def test_ready_when_database_answers_and_indexes_exist(api):
    response = await api.get("/health/ready")
    assert response.code == 200


@pytest.mark.gen_test
async def test_every_response_carries_a_generated_request_id(api):
    response = await api.get("/health")
    assert len(response.headers["X-Request-ID"]) >= 16


@pytest.mark.gen_test
async def test_a_sane_client_request_id_is_echoed(api):
    response = await api.get("/health", headers={"X-Request-ID": "abc-123.X_y"})
    assert response.headers["X-Request-ID"] == "abc-123.X_y"


@pytest.mark.gen_test
async def test_an_insane_client_request_id_is_replaced(api):
    response = await api.get("/health", headers={"X-Request-ID": "a" * 129})
    assert response.headers["X-Request-ID"] != "a" * 129
    response = await api.get("/health", headers={"X-Request-ID": "bad id!"})
    assert response.headers["X-Request-ID"] != "bad id!"


@pytest.mark.gen_test
async def test_unknown_route_is_404_in_the_error_shape(api):
    response = await api.get("/api/v1/nothing-here")
    assert_error(response, 404, "not_found")
    assert response.headers["X-Request-ID"]


@pytest.mark.gen_test
async def test_unsupported_method_is_405_in_the_error_shape(api):
    response = await api.request("DELETE", "/api/v1/products")
    assert_error(response, 405, "method_not_allowed")


@pytest.mark.gen_test
async def test_the_tests_run_on_the_event_loop_production_runs_on():
    # run.py and tests/conftest.py both install tornado_app.runtime.eventloop's policy.
    assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
