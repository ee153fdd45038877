"""The JavaScript client (clients/js) under Node's own test runner, against real servers that
its tests start from this repository on the suite's FerretDB. Node is required, not optional:
`make test` installs the client's npm packages (`npm ci` in clients/js)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import JWT_SECRET

JS = Path(__file__).resolve().parent.parent / "clients" / "js"
NODE_TESTS = sorted((JS / "test").glob("*.test.mjs"))


def run_node_tests(path: Path, mongodb_uri: str) -> subprocess.CompletedProcess:
    node = shutil.which("node")
    assert node, "Node.js is required for the JS client's tests (Debian package nodejs)"
    assert (JS / "node_modules" / "ws").is_dir(), "run `npm ci` in clients/js (make test-tools does)"
    env = {**os.environ, "TEST_MONGODB_URI": mongodb_uri, "PYTHON": sys.executable,
           "JWT_SECRET": JWT_SECRET}
    return subprocess.run([node, "--test", "--test-reporter=spec", str(path)], cwd=JS, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("path", NODE_TESTS, ids=[p.name for p in NODE_TESTS])
def test_node_suite(path, mongodb_uri):
    done = run_node_tests(path, mongodb_uri)
    assert done.returncode == 0, done.stdout + done.stderr
