"""`run.py` as a real subprocess on the session's FerretDB, for tests that need a whole process:
schemathesis, stderr logs, SIGTERM."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import JWT_SECRET
from tornado_app.runtime.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent


class ServerProcess:
    def __init__(self, mongodb_uri: str, db_name: str, workdir: Path, args=(), **env):
        self.args = list(args)
        self.mongodb_uri = mongodb_uri
        self.db_name = db_name
        self.workdir = Path(workdir)
        self.port = free_port()
        self.stderr_path = self.workdir / f"server-{self.port}.log"
        self.env = {k: v for k, v in os.environ.items() if k not in ("APP_ENV",)}
        self.env.update(MONGODB_URI=mongodb_uri, MONGODB_DB=db_name, JWT_SECRET=JWT_SECRET,
                        BCRYPT_ROUNDS="4", LOG_LEVEL="WARNING", PORT=str(self.port),
                        DATA_DIR=str(self.workdir / "data"))
        self.env.update({k: str(v) for k, v in env.items()})
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "ServerProcess":
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.stderr_path, "ab") as stderr:
            self.process = subprocess.Popen([sys.executable, "run.py", *self.args], cwd=ROOT,
                                            env=self.env,
                                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                            stderr=stderr)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "server exited at start:\n" + self.stderr()
            try:
                with urllib.request.urlopen(self.base_url + "/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("server not ready:\n" + self.stderr())

    def create_admin(self, username: str = "admin", password: str = "admin-password-1") -> str:
        """`run.py create-admin` on the same database, then a login: the admin's access token."""
        done = subprocess.run(
            [sys.executable, "run.py", "create-admin", "--username", username,
             "--email", f"{username}@example.com"], cwd=ROOT,
            env={**self.env, "ADMIN_PASSWORD": password}, capture_output=True, text=True,
            timeout=60)
        assert done.returncode == 0, done.stderr
        return self.login(username, password)

    def login(self, username: str, password: str) -> str:
        request = urllib.request.Request(
            self.base_url + "/api/v1/auth/login", method="POST",
            data=json.dumps({"username": username, "password": password}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())["access_token"]

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_records(self) -> list[dict]:
        """Every stderr line, each of which must be one JSON object."""
        return [json.loads(line) for line in self.stderr().splitlines() if line.strip()]


def http_json(method: str, url: str, payload=None, token: str | None = None, timeout=10.0):
    """A blocking JSON request for tests that run outside the IOLoop: (status, headers, body)."""
    headers = {"Content-Type": "application/json"} if payload is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, method=method, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
            return response.status, response.headers, json.loads(body) if body else None
    except urllib.error.HTTPError as exc:
        body = exc.read()
        return exc.code, exc.headers, json.loads(body) if body else None
