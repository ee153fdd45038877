"""Just enough HTTP to drive our API from the benchmark: register, log in, create a post."""

import http.client
import json
import time

BENCH_USER = {"username": "benchuser", "email": "bench@example.com",
              "password": "benchmark password 42"}


def request(port: int, method: str, path: str, body=None, token: str | None = None,
            timeout: float = 30.0):
    """(status, decoded JSON or None, seconds)."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    start = time.time()
    try:
        conn.request(method, path, json.dumps(body) if body is not None else None, headers)
        response = conn.getresponse()
        raw = response.read()
        seconds = time.time() - start
    finally:
        conn.close()
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        data = None
    return response.status, data, seconds


def ensure_user(port: int) -> None:
    status, data, _ = request(port, "POST", "/api/v1/auth/register", BENCH_USER)
    if status not in (201, 409):
        raise RuntimeError(f"register answered {status}: {data}")


def login(port: int) -> str:
    status, data, _ = request(port, "POST", "/api/v1/auth/login",
                              {"username": BENCH_USER["username"],
                               "password": BENCH_USER["password"]})
    if status != 200:
        raise RuntimeError(f"login answered {status}: {data}")
    return data["access_token"]


def create_post(port: int, token: str, title: str = "Benchmark post") -> tuple[int, dict, float]:
    return request(port, "POST", "/api/v1/posts",
                   {"title": title, "content": "One event to every subscriber.",
                    "tags": ["bench"]}, token)
