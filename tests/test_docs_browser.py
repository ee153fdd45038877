"""/docs in a real headless Chromium: the page renders from our own assets, "Authorize" logs in
through the OAuth2 token endpoint, and one call is made with the token it got."""

import asyncio
import base64
import json
import shutil

import pytest
import websockets
from tornado.httpclient import AsyncHTTPClient

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,1600"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed "
                                "(Debian package chromium; .ci/run installs it)")


class Page:
    """A tiny Chrome DevTools Protocol client: enough to evaluate script and take a screenshot."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0

    async def call(self, method: str, **params):
        self.next_id += 1
        await self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(await asyncio.wait_for(self.ws.recv(), 20))
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message["result"]

    async def js(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True,
                                 returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 20.0):
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = await self.js(expression)
            if value:
                return value
            assert asyncio.get_running_loop().time() < deadline, f"timed out on: {expression}"
            await asyncio.sleep(0.1)


async def _open_chromium(tmp_path):
    profile = tmp_path / "profile"
    process = await asyncio.create_subprocess_exec(
        CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
        "about:blank", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    port_file = profile / "DevToolsActivePort"
    for _ in range(200):
        if port_file.exists() and port_file.read_text().strip():
            break
        await asyncio.sleep(0.1)
    port = int(port_file.read_text().split()[0])
    http = AsyncHTTPClient(force_instance=True)
    targets = json.loads((await http.fetch(f"http://127.0.0.1:{port}/json/list")).body)
    http.close()
    page_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
    return process, page_url


SET_INPUT = """(sel, value) => {
  const el = document.querySelector(sel);
  const setter = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
  setter.call(el, value);
  el.dispatchEvent(new Event('input', {bubbles: true}));
  return true;
}"""


@pytest.mark.gen_test(timeout=120)
async def test_docs_authorize_and_one_call_in_headless_chromium(api, server, tmp_path):
    await api.register("alice", password="password123")
    process, page_url = await _open_chromium(tmp_path)
    try:
        async with websockets.connect(page_url, max_size=64 * 1024 * 1024) as ws:
            page = Page(ws)
            await page.call("Page.enable")
            await page.call("Page.navigate", url=f"http://127.0.0.1:{server.port}/docs")
            await page.wait_for("document.querySelectorAll('.opblock').length > 20")
            assert await page.js("document.body.innerText.includes('/api/v1/posts')")

            await page.js("document.querySelector('.auth-wrapper .authorize').click()")
            await page.wait_for("!!document.querySelector('#oauth_username')")
            await page.js(f"({SET_INPUT})('#oauth_username', 'alice')")
            await page.js(f"({SET_INPUT})('#oauth_password', 'password123')")
            await page.js("document.querySelector('.auth-btn-wrapper .authorize').click()")
            await page.wait_for("document.querySelector('.auth-container') && "
                                "document.querySelector('.auth-container').innerText"
                                ".includes('Logout')")
            await page.js("document.querySelector('.btn-done').click()")

            block = "#operations-users-get_api_v1_users_me"
            await page.js(f"(document.querySelector('{block} .opblock-summary-control') || "
                          f"document.querySelector('{block} .opblock-summary')).click()")
            await page.wait_for(f"!!document.querySelector('{block} .try-out__btn')")
            await page.js(f"document.querySelector('{block} .try-out__btn').click()")
            await page.wait_for(f"!!document.querySelector('{block} .execute')")
            await page.js(f"document.querySelector('{block} .execute').click()")
            status = await page.wait_for(
                f"(document.querySelector('{block} .live-responses-table tbody .response-col_status')"
                " || {}).innerText")
            assert status.strip().startswith("200"), await page.js(
                f"document.querySelector('{block} .live-responses-table').innerText")
            body = await page.js(f"document.querySelector('{block} .live-responses-table tbody "
                                 ".response-col_description').innerText")
            assert '"username": "alice"' in body

            shot = await page.call("Page.captureScreenshot", format="png")
            png = base64.b64decode(shot["data"])
            assert png.startswith(b"\x89PNG") and len(png) > 20_000
            (tmp_path / "docs.png").write_bytes(png)
    finally:
        process.terminate()
        await process.wait()
