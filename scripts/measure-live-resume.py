"""Measures, in headless Chromium on the live page (/examples/live), the time from a server
restart (after SIGKILL) to the first event the page receives after it: the server's start-up,
the JS client's backoff and reconnect, and delivery. Median of 5.

    FERRETDB_BIN=... .venv/bin/python scripts/measure-live-resume.py
"""

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.server_process import ServerProcess, http_json  # noqa: E402
from tests.test_live_page import Browser, open_live  # noqa: E402
from tornado_app.runtime.embedded import EmbeddedFerretDB  # noqa: E402


async def measure(runs: int = 5) -> None:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedFerretDB(Path(tmp) / "db") as db:
        server = ServerProcess(db.uri, "measure", Path(tmp) / "server")
        server.env["ALLOWED_ORIGINS"] = server.base_url
        await asyncio.to_thread(server.start)
        token = await asyncio.to_thread(server.create_admin)
        ready, first_event = [], []
        try:
            async with Browser(Path(tmp)) as page:
                await open_live(page, server.base_url)
                for run in range(runs):
                    await asyncio.to_thread(server.kill)
                    await page.wait_for("window.live.status.state === 'reconnecting'")
                    await asyncio.sleep(1.0)  # the client has backed off a few times
                    seen = await page.js("window.live.events.length")
                    started = time.time()
                    await asyncio.to_thread(server.start)
                    ready.append(time.time() - started)
                    status, _, _ = await asyncio.to_thread(
                        http_json, "POST", f"{server.base_url}/api/v1/posts",
                        {"title": f"after restart {run}", "content": "c"}, token)
                    assert status == 201
                    await page.wait_for(f"window.live.events.length > {seen}", timeout=60)
                    received = await page.js(f"window.live.receivedAt[{seen}]") / 1000
                    first_event.append(received - started)
        finally:
            server.kill()
    print(f"restart → server ready:           median {statistics.median(ready):.2f} s "
          f"({', '.join(f'{t:.2f}' for t in ready)})")
    print(f"restart → first resumed event:    median {statistics.median(first_event):.2f} s "
          f"({', '.join(f'{t:.2f}' for t in first_event)})")


if __name__ == "__main__":
    asyncio.run(measure())
