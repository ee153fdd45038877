"""/examples/live: the live page and its scripts, from this server only, in development only."""

import pytest
from tornado.httpclient import HTTPClientError

from tests.conftest import assert_error


@pytest.mark.gen_test
async def test_live_page_and_its_scripts_are_served_in_development(api):
    for path, media_type in [("", "text/html"), ("/app.js", "application/javascript"),
                             ("/realtime.js", "application/javascript")]:
        response = await api.http.fetch(f"{api.base_url}/examples/live{path}")
        assert response.headers["Content-Type"].startswith(media_type)
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    page = await api.http.fetch(f"{api.base_url}/examples/live")
    assert b'src="/examples/live/app.js"' in page.body


@pytest.mark.gen_test
async def test_other_names_under_examples_are_not_found(api):
    assert_error(await api.get("/examples/live/../../setup.cfg"), 404, "not_found")
    assert_error(await api.get("/examples/live/other.js"), 404, "not_found")


class TestProduction:
    @pytest.fixture
    def settings_overrides(self):
        return {"app_env": "production"}

    @pytest.mark.gen_test
    async def test_the_live_page_is_not_served_in_production(self, api):
        with pytest.raises(HTTPClientError) as raised:
            await api.http.fetch(f"{api.base_url}/examples/live")
        assert raised.value.code == 404
        assert_error(await api.get("/examples/live/realtime.js"), 404, "not_found")
