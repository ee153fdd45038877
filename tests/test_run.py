"""`python run.py` as a user runs it: embedded database, settings checks, create-admin, restart."""

import json
import os
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


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("MONGODB_URI", "REDIS_URL", "JWT_SECRET", "APP_ENV")}
    env.update(DATA_DIR=str(tmp_path / "data"), BCRYPT_ROUNDS="4", LOG_LEVEL="WARNING", **extra)
    return env


def _run(args, env, **kw):
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, **kw)


def _call(port, method, path, body=None, token=None):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                     data=json.dumps(body).encode() if body else None)
    if body:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


class RunningServer:
    def __init__(self, env):
        self.port = free_port()
        self.process = subprocess.Popen([sys.executable, "run.py"], cwd=ROOT,
                                        env={**env, "PORT": str(self.port)},
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if _call(self.port, "GET", "/health/ready")[0] == 200:
                    return
            except OSError:
                pass
            assert self.process.poll() is None, self.process.stdout.read().decode()
            time.sleep(0.1)
        raise AssertionError("server did not become ready")

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(20)


def test_workers_without_redis_are_refused(tmp_path):
    result = _run(["--workers", "2"], _env(tmp_path))
    assert result.returncode != 0
    assert "REDIS_URL" in result.stderr


def test_workers_on_the_embedded_ferretdb_are_refused_before_it_starts(tmp_path):
    # FerretDB's read-then-write updates are atomic only through one process's one connection.
    result = _run(["--workers", "2"], _env(tmp_path, REDIS_URL="redis://127.0.0.1:1/0"))
    assert result.returncode == 2
    assert "--workers 2 on FerretDB is refused" in result.stderr
    assert "MONGODB_URI" in result.stderr and "ALLOW_UNSAFE_MULTIWORKER_FERRETDB" in result.stderr
    assert not (tmp_path / "data" / "ferretdb").exists()


def test_production_without_a_strong_secret_is_refused(tmp_path):
    result = _run([], _env(tmp_path, APP_ENV="production", JWT_SECRET="short"))
    assert result.returncode != 0
    assert "JWT_SECRET" in result.stderr


def test_a_bad_setting_is_named_clearly(tmp_path):
    result = _run([], _env(tmp_path, PORT="eighty"))
    assert result.returncode != 0
    assert "PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_create_admin_then_serve_on_the_same_embedded_database(tmp_path):
    env = _env(tmp_path)
    result = _run(["create-admin", "--username", "root", "--email", "root@example.com"],
                  {**env, "ADMIN_PASSWORD": "admin-password"})
    assert result.returncode == 0, result.stderr
    again = _run(["create-admin", "--username", "root", "--email", "root@example.com"],
                 {**env, "ADMIN_PASSWORD": "admin-password"})
    assert again.returncode != 0

    server = RunningServer(env)
    try:
        status, tokens = _call(server.port, "POST", "/api/v1/auth/login",
                               {"username": "root", "password": "admin-password"})
        assert status == 200
        status, me = _call(server.port, "GET", "/api/v1/users/me", token=tokens["access_token"])
        assert me["role"] == "admin"
    finally:
        assert server.stop() == 0


def test_data_and_generated_secret_survive_a_restart(tmp_path):
    env = _env(tmp_path)
    server = RunningServer(env)
    try:
        status, _ = _call(server.port, "POST", "/api/v1/auth/register",
                          {"username": "alice", "email": "a@example.com", "password": "password123"})
        assert status == 201
        _, tokens = _call(server.port, "POST", "/api/v1/auth/login",
                          {"username": "alice", "password": "password123"})
    finally:
        assert server.stop() == 0
    assert (tmp_path / "data" / "jwt_secret").exists()

    server = RunningServer(env)
    try:
        # The same secret: a token from before the restart is still good.
        status, me = _call(server.port, "GET", "/api/v1/users/me", token=tokens["access_token"])
        assert status == 200 and me["username"] == "alice"
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("argv", [["create-admin", "--username", "x y", "--email", "bad"]])
def test_create_admin_validates_its_input(tmp_path, argv):
    result = _run(argv, {**_env(tmp_path), "ADMIN_PASSWORD": "admin-password"})
    assert result.returncode != 0
    assert "username" in result.stderr
