"""The README's client examples work as written: each runs against a real server (its URL put in
place of the default one) and prints the event of a post created meanwhile."""

import asyncio
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
JS = ROOT / "clients" / "js"


def example(language: str) -> str:
    readme = (ROOT / "README.md").read_text()
    found = re.search(rf"<!-- example:{language} -->\n```{language}\n(.*?)```", readme, re.S)
    assert found, f"README has no {language} example"
    code = found.group(1)
    assert len(code.strip().splitlines()) <= 10, "the example is meant to be ten lines at most"
    return code


async def run_until_printed(command: list[str], cwd: Path, env: dict, api, text: str,
                            timeout: float = 30.0) -> str:
    """Runs the example and creates a post every half second (the example may not be
    subscribed yet) until the example prints `text`."""
    token = await api.user_token("alice")
    process = await asyncio.create_subprocess_exec(
        *command, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    output = []
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        while not any(text in line for line in output):
            assert asyncio.get_running_loop().time() < deadline, "".join(output)
            try:
                line = await asyncio.wait_for(process.stdout.readline(), 0.5)
            except asyncio.TimeoutError:
                response = await api.post("/api/v1/posts", {"title": "from the README",
                                                            "content": "c"}, token=token)
                assert response.code == 201
                continue
            assert line, "the example exited:\n" + "".join(output)
            output.append(line.decode())
    finally:
        process.kill()
        await process.wait()
    return "".join(output)


@pytest.mark.gen_test(timeout=60)
async def test_javascript_example(api, server):
    node = shutil.which("node")
    assert node, "Node.js is required (Debian package nodejs)"
    code = example("js").replace("http://127.0.0.1:8888", api.base_url)
    path = JS / f".readme-example-{os.getpid()}.mjs"  # beside realtime.js and node_modules
    path.write_text(code)
    try:
        output = await run_until_printed([node, str(path)], JS, dict(os.environ), api,
                                         "post.created from the README")
    finally:
        path.unlink()
    assert "open websocket 0" in output


@pytest.mark.gen_test(timeout=60)
async def test_python_example(api, server, tmp_path):
    code = example("python").replace("http://127.0.0.1:8888", api.base_url)
    path = tmp_path / "example.py"
    path.write_text(code)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "clients" / "python")}
    output = await run_until_printed([sys.executable, "-u", str(path)], tmp_path, env, api,
                                     "post.created from the README")
    assert "post.created from the README" in output
