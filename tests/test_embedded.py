"""The embedded FerretDB as `python run.py` runs it: restarted when it dies, never outliving its
server, never two on one data directory, and liveness that says when the process cannot heal."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tornado_app.runtime.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent
FERRETDB_BIN = os.environ.get("FERRETDB_BIN") or str(ROOT / ".bin" / "ferretdb")


def _get(port: int, path: str):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _post(port: int, path: str, body: dict, token: str | None = None):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method="POST",
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


class EmbeddedServer:
    """`python run.py` on its own embedded FerretDB in `data_dir`."""

    def __init__(self, data_dir: Path, **env):
        self.data_dir = data_dir
        self.port = free_port()
        self.log_path = data_dir.parent / f"server-{self.port}.log"
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("MONGODB_URI", "REDIS_URL", "APP_ENV")}
        self.env.update(DATA_DIR=str(data_dir), PORT=str(self.port), BCRYPT_ROUNDS="4",
                        LOG_LEVEL="WARNING", JWT_SECRET="embedded-test-" + "x" * 40,
                        FERRETDB_BIN=FERRETDB_BIN)
        self.env.update(env)
        self.start_argv: list[str] = []
        self.process: subprocess.Popen | None = None

    def start(self, wait_ready: bool = True) -> "EmbeddedServer":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "run.py", *self.start_argv],
                                            cwd=ROOT, env=self.env,
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        if wait_ready:
            def ready():
                assert self.process.poll() is None, "server exited:\n" + self.log()
                try:
                    return _get(self.port, "/health/ready")[0] == 200
                except OSError:
                    return False
            _wait(ready, 30, "the server did not become ready")
        return self

    def ferretdb_pid(self) -> int:
        info = (self.data_dir / "ferretdb" / "ferretdb.lock").read_text()
        return int(re.search(r"ferretdb pid (\d+)", info).group(1))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def servers():
    started = []
    yield started
    for server in started:
        server.stop()


def test_a_killed_embedded_database_is_restarted_with_its_data(tmp_path, servers):
    server = EmbeddedServer(tmp_path / "data").start()
    servers.append(server)
    assert _post(server.port, "/api/v1/auth/register", {
        "username": "alice", "email": "alice@example.com", "password": "password123"})[0] == 201
    first = server.ferretdb_pid()

    os.kill(first, signal.SIGKILL)
    # Liveness holds (the process is healing itself); readiness is back once FerretDB is.
    _wait(lambda: server.ferretdb_pid() != first, 20, "FerretDB was not restarted")
    _wait(lambda: _get(server.port, "/health/ready")[0] == 200, 20, "not ready again")
    assert _get(server.port, "/health") == (200, {"status": "ok"})
    status, tokens = _post(server.port, "/api/v1/auth/login",
                           {"username": "alice", "password": "password123"})
    assert status == 200, tokens
    records = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    messages = [r["message"] for r in records if r["logger"] == "tornado_app.runtime.embedded_supervisor"]
    assert any("exited with code -9" in m for m in messages), messages
    assert any(m.startswith("embedded FerretDB restarted") for m in messages), messages


def test_liveness_fails_only_once_the_database_cannot_be_restarted(tmp_path, servers):
    binary = tmp_path / "ferretdb"
    binary.symlink_to(FERRETDB_BIN)
    server = EmbeddedServer(tmp_path / "data", FERRETDB_BIN=str(binary)).start()
    servers.append(server)
    binary.unlink()  # every restart fails from now on
    os.kill(server.ferretdb_pid(), signal.SIGKILL)

    _wait(lambda: _get(server.port, "/health")[0] == 503, 30, "liveness stayed 200")
    status, body = _get(server.port, "/health")
    assert body["error"]["code"] == "service_unavailable"
    assert "could not be restarted" in body["error"]["message"]
    status, ready = _get(server.port, "/health/ready")
    assert status == 503
    assert "restarting" in ready["error"]["details"][0]["msg"]

    binary.symlink_to(FERRETDB_BIN)  # the next attempt works, and the process is well again
    _wait(lambda: _get(server.port, "/health/ready")[0] == 200, 60, "not ready again")
    assert _get(server.port, "/health")[0] == 200


def test_the_embedded_database_dies_with_a_killed_server(tmp_path, servers):
    server = EmbeddedServer(tmp_path / "data").start()
    servers.append(server)
    ferretdb = server.ferretdb_pid()
    server.process.kill()
    server.process.wait()
    _wait(lambda: _gone(ferretdb), 10, "FerretDB outlived its server")
    # The next start on the same directory finds nothing in its way.
    again = EmbeddedServer(tmp_path / "data").start()
    servers.append(again)
    assert again.ferretdb_pid() != ferretdb


def test_a_second_server_on_the_same_data_directory_is_refused(tmp_path, servers):
    first = EmbeddedServer(tmp_path / "data").start()
    servers.append(first)
    second = EmbeddedServer(tmp_path / "data").start(wait_ready=False)
    servers.append(second)
    assert second.process.wait(30) == 2
    assert "a FerretDB is already running on" in second.log()
    assert f"ferretdb pid {first.ferretdb_pid()}" in second.log()
    assert _get(first.port, "/health/ready")[0] == 200


@pytest.fixture
def redis_url(tmp_path):
    from tests.test_workers import RedisServer
    redis = RedisServer(tmp_path)
    redis.start()
    yield redis.url
    redis.stop()


def _children(pid: int) -> list[int]:
    return [int(child) for child in
            Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_with_several_workers_the_parent_restarts_the_database_and_all_die_with_it(
        tmp_path, servers, redis_url):
    server = EmbeddedServer(tmp_path / "data", REDIS_URL=redis_url,
                            ALLOW_UNSAFE_MULTIWORKER_FERRETDB="1")
    server.start_argv = ["--workers", "2"]
    server.start()
    servers.append(server)
    first = server.ferretdb_pid()
    os.kill(first, signal.SIGKILL)
    _wait(lambda: server.ferretdb_pid() != first, 20, "FerretDB was not restarted")
    _wait(lambda: _get(server.port, "/health/ready")[0] == 200, 20, "not ready again")

    ferretdb = server.ferretdb_pid()
    workers = [pid for pid in _children(server.process.pid) if pid != ferretdb]
    assert len(workers) == 2
    server.process.kill()
    server.process.wait()
    for pid in workers + [ferretdb]:
        _wait(lambda: _gone(pid), 20, f"{pid} outlived the killed parent")


def test_a_hung_embedded_database_is_killed_and_restarted(tmp_path, servers):
    server = EmbeddedServer(tmp_path / "data", DB_TIMEOUT="1").start()
    servers.append(server)
    hung = server.ferretdb_pid()
    os.kill(hung, signal.SIGSTOP)  # alive, holding its port and connections, answering nothing
    try:
        _wait(lambda: server.ferretdb_pid() != hung, 40, "the hung FerretDB was not replaced")
        _wait(lambda: _get(server.port, "/health/ready")[0] == 200, 20, "not ready again")
        assert _gone(hung)
        assert "answered no ping" in server.log()
    finally:
        if not _gone(hung):
            os.kill(hung, signal.SIGCONT)
