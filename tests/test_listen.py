"""The listening sockets' accept queue (LISTEN_BACKLOG), on every way the server listens."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_workers import ROOT, _env, _wait_ready, free_port
from tests.test_workers import drop_db, redis_server  # noqa: F401 (fixtures)
from tornado_app.runtime.listen import (FALLBACK_BACKLOG, MAX_SOCKETS, SOMAXCONN,
                                        default_backlog, split_backlog, system_backlog)


def listen_backlogs(port: int) -> list[int]:
    """The backlog of each socket listening on `port`, as the kernel reports it (`ss` shows it
    in the Send-Q column of a listening socket)."""
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True,
                         check=True).stdout
    return sorted(int(line.split()[2]) for line in out.splitlines() if line.strip())


def children(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]


def somaxconn() -> int:
    return int(SOMAXCONN.read_text())


def test_the_systems_maximum_for_one_socket_is_read_from_proc():
    assert system_backlog() == somaxconn()


def test_an_unreadable_maximum_falls_back(tmp_path):
    assert system_backlog(tmp_path / "absent") == FALLBACK_BACKLOG
    (tmp_path / "garbage").write_text("not a number\n")
    assert system_backlog(tmp_path / "garbage") == FALLBACK_BACKLOG


def test_a_backlog_past_one_sockets_maximum_is_shared_by_several():
    assert split_backlog(777, 4096) == [777]
    assert split_backlog(4096, 4096) == [4096]
    assert split_backlog(10000, 4096) == [3334] * 3
    assert split_backlog(16384, 4096) == [4096] * 4
    assert split_backlog(10 ** 6, 4096) == [4096] * MAX_SOCKETS


class TestOneProcess:
    @pytest.fixture
    def settings_overrides(self):
        return {"listen_backlog": 777}

    def test_the_server_listens_with_the_configured_backlog(self, server):
        assert listen_backlogs(server.port) == [777]


def test_by_default_the_server_has_room_for_a_storm_of_16384_connects(server):
    backlogs = listen_backlogs(server.port)
    assert sum(backlogs) >= default_backlog() >= 16384
    assert max(backlogs) <= somaxconn()


def test_workers_share_the_sockets_with_the_configured_backlog(
        mongodb_uri, db_name, redis_server, drop_db):  # noqa: F811 (fixtures)
    port = free_port()
    backlog = 2 * somaxconn()
    process = subprocess.Popen([sys.executable, "run.py", "--workers", "2"], cwd=ROOT,
                               env=_env(mongodb_uri, db_name, PORT=str(port),
                                        REDIS_URL=redis_server.url, LISTEN_BACKLOG=str(backlog),
                                        ALLOW_UNSAFE_MULTIWORKER_FERRETDB="1"))
    try:
        _wait_ready(port, process)
        assert listen_backlogs(port) == [somaxconn()] * 2
        # Each worker holds both sockets: the kernel hands a connection to either socket.
        workers = children(process.pid)
        assert len(workers) == 2
        out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True,
                             text=True, check=True).stdout
        for line in out.splitlines():
            assert all(f"pid={pid}," in line for pid in workers), line
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
