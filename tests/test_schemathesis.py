"""schemathesis against /openapi.json of a real `run.py`: no 500 anywhere, and every response
matches its documented status, content type and schema, without a token and as an admin."""

import os
import re
import subprocess
import sys
import uuid

import pytest
from pymongo import MongoClient

from tests.server_process import ServerProcess

CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance")
# Long-lived endpoints have their own tests; holding them open would only slow the fuzzing down.
LONG_LIVED = ("/api/v1/ws", "/api/v1/poll", "/api/v1/stream")
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "15"))
SEED = os.environ.get("SCHEMATHESIS_SEED", "20240")


@pytest.fixture(scope="module")
def api_process(mongodb_uri, tmp_path_factory):
    db_name = f"test_st_{uuid.uuid4().hex[:12]}"
    server = ServerProcess(mongodb_uri, db_name, tmp_path_factory.mktemp("schemathesis"))
    try:
        server.start()
        yield server
    finally:
        server.kill()
        with MongoClient(mongodb_uri, serverSelectionTimeoutMS=3000) as client:
            client.drop_database(db_name)


def _run(server: ServerProcess, workdir, *extra: str) -> str:
    command = [sys.executable, "-m", "schemathesis.cli", "--no-color", "run",
               f"{server.base_url}/openapi.json", "--checks", CHECKS,
               "--max-examples", str(MAX_EXAMPLES), "--seed", SEED, "--workers", "2",
               "--request-timeout", "10", "--generation-database", "none"]
    for path in LONG_LIVED:
        command += ["--exclude-path", path]
    command += list(extra)
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_COLOR": "1"})
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-20000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", output)
    assert counts, output[-5000:]
    assert counts.group(1) == counts.group(2), output[-5000:]
    assert int(counts.group(1)) > 100, output[-5000:]
    assert not re.search(r"\b\d+ (failed|errored)\b", output), output[-20000:]
    return output


def _assert_no_server_errors_logged(server: ServerProcess) -> None:
    bad = [r for r in server.log_records() if r.get("level") in ("ERROR", "CRITICAL")]
    assert bad == [], bad[:5]


def test_without_a_token(api_process, tmp_path):
    output = _run(api_process, tmp_path)
    assert "Tested:" in output
    _assert_no_server_errors_logged(api_process)


def test_as_an_admin(api_process, tmp_path):
    token = api_process.create_admin("st_admin")
    # Logging out would revoke the token, and a role change may demote the admin the run uses:
    # both are fuzzed below with a second admin of their own.
    _run(api_process, tmp_path, "-H", f"Authorization: Bearer {token}",
         "--exclude-path", "/api/v1/auth/logout", "--exclude-path", "/api/v1/users/{user_id}")
    _assert_no_server_errors_logged(api_process)


def test_as_an_admin_on_the_token_revoking_operations(api_process, tmp_path):
    token = api_process.create_admin("st_admin2")
    _run(api_process, tmp_path, "-H", f"Authorization: Bearer {token}",
         "--include-path", "/api/v1/auth/logout", "--include-path", "/api/v1/users/{user_id}",
         "--include-path", "/api/v1/users")
    _assert_no_server_errors_logged(api_process)
