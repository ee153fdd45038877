"""The listening socket's accept queue (LISTEN_BACKLOG), on every way the server listens."""

import subprocess
import sys

import pytest

from tests.test_workers import ROOT, _env, _wait_ready, free_port
from tests.test_workers import drop_db, redis_server  # noqa: F401 (fixtures)
from tornado_app.listen import FALLBACK_BACKLOG, SOMAXCONN, system_backlog


def listen_backlog(port: int) -> int:
    """The backlog of the socket listening on `port`, as the kernel reports it (`ss` shows it in
    the Send-Q column of a listening socket)."""
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True,
                         check=True).stdout
    backlogs = {int(line.split()[2]) for line in out.splitlines() if line.strip()}
    assert len(backlogs) == 1, out
    return backlogs.pop()


def test_the_default_is_the_systems_maximum():
    assert system_backlog() == int(SOMAXCONN.read_text())


def test_an_unreadable_maximum_falls_back(tmp_path):
    assert system_backlog(tmp_path / "absent") == FALLBACK_BACKLOG
    (tmp_path / "garbage").write_text("not a number\n")
    assert system_backlog(tmp_path / "garbage") == FALLBACK_BACKLOG


class TestOneProcess:
    @pytest.fixture
    def settings_overrides(self):
        return {"listen_backlog": 777}

    def test_the_server_listens_with_the_configured_backlog(self, server):
        assert listen_backlog(server.port) == 777


def test_the_server_listens_with_the_systems_maximum_by_default(server):
    assert listen_backlog(server.port) == system_backlog()


def test_workers_share_a_socket_with_the_configured_backlog(
        mongodb_uri, db_name, redis_server, drop_db):  # noqa: F811 (fixtures)
    port = free_port()
    process = subprocess.Popen([sys.executable, "run.py", "--workers", "2"], cwd=ROOT,
                               env=_env(mongodb_uri, db_name, PORT=str(port),
                                        REDIS_URL=redis_server.url, LISTEN_BACKLOG="555",
                                        ALLOW_UNSAFE_MULTIWORKER_FERRETDB="1"))
    try:
        _wait_ready(port, process)
        assert listen_backlog(port) == 555
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
