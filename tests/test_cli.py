"""The command line as a user runs it: `python -m tornado_app`, the `tornado-app` console script
(declared in setup.cfg) and `python run.py` are one CLI; `seed` twice adds nothing; `serve --dev`
reloads; `GET /` leads to the documentation."""

import configparser
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from pymongo import MongoClient
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from tornado_app import cli
from tornado_app.runtime.embedded import free_port

ROOT = Path(__file__).resolve().parent.parent
COLLECTIONS = ("users", "posts", "comments", "products", "events")


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("MONGODB_URI", "REDIS_URL", "JWT_SECRET", "APP_ENV", "PORT", "DEV",
                        "LOG_FORMAT")}
    env.update({"DATA_DIR": str(tmp_path / "data"), "BCRYPT_ROUNDS": "4",
                "LOG_LEVEL": "WARNING", "ENV_FILE": "", **extra})
    return env


def _module(args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "tornado_app", *args], cwd=ROOT,
                          env=env or os.environ, capture_output=True, text=True, timeout=120,
                          **kw)


def test_python_m_tornado_app_help_lists_every_command():
    result = _module(["--help"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: tornado-app")
    for command in ("serve", "create-admin", "seed"):
        assert command in result.stdout


@pytest.mark.parametrize("command, option", [("serve", "--workers"), ("serve", "--dev"),
                                             ("create-admin", "--username"), ("seed", "--force")])
def test_each_command_has_its_help(command, option):
    result = _module([command, "--help"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: tornado-app {command}")
    assert option in result.stdout


def test_run_py_is_the_same_cli():
    via_run = subprocess.run([sys.executable, "run.py", "--help"], cwd=ROOT, capture_output=True,
                             text=True, timeout=60)
    assert via_run.returncode == 0
    assert via_run.stdout == _module(["--help"]).stdout


def test_an_unknown_command_is_refused_with_usage():
    result = _module(["frobnicate"])
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_the_console_script_is_declared_and_loads_the_cli():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    scripts = [line.split("=", 1) for line in
               config["options.entry_points"]["console_scripts"].strip().splitlines()]
    declared = {name.strip(): target.strip() for name, target in scripts}
    assert declared == {"tornado-app": "tornado_app.cli:main"}
    entry = EntryPoint("tornado-app", declared["tornado-app"], "console_scripts")
    assert entry.load() is cli.main


def test_seed_is_refused_in_production(tmp_path):
    result = _module(["seed"], _env(tmp_path, APP_ENV="production", JWT_SECRET="x" * 40))
    assert result.returncode == 2
    assert "APP_ENV=production" in result.stderr
    assert not (tmp_path / "data" / "ferretdb").exists()


def _counts(uri, db_name):
    with MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
        db = client[db_name]
        return {name: db[name].count_documents({}) for name in COLLECTIONS}


def test_seed_twice_adds_nothing_the_second_time(tmp_path, mongodb_uri, db_name):
    env = _env(tmp_path, MONGODB_URI=mongodb_uri, MONGODB_DB=db_name)
    try:
        first = _module(["seed"], env)
        assert first.returncode == 0, first.stderr
        assert "demo-admin / demo-admin-password" in first.stdout
        assert "demo-user / demo-user-password" in first.stdout
        assert "added 2 users, 3 posts, 5 comments, 6 products" in first.stdout
        after_first = _counts(mongodb_uri, db_name)
        assert {k: after_first[k] for k in ("users", "posts", "comments", "products")} == \
            {"users": 2, "posts": 3, "comments": 5, "products": 6}
        # Written through the stores: each item has its event in the log.
        assert after_first["events"] >= 3 + 5 + 6

        second = _module(["seed"], env)
        assert second.returncode == 0, second.stderr
        assert "added 0 users, 0 posts, 0 comments, 0 products" in second.stdout
        assert _counts(mongodb_uri, db_name) == after_first
    finally:
        with MongoClient(mongodb_uri, serverSelectionTimeoutMS=5000) as client:
            client.drop_database(db_name)


def test_seed_while_the_server_runs_uses_its_embedded_database(tmp_path):
    # Two FerretDBs may not share a data directory: seed finds the running one by its lock file,
    # and what it adds is served at once.
    port = free_port()
    env = _env(tmp_path, PORT=str(port))
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "tornado_app", "serve"], cwd=ROOT,
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: _health(port), server)
        result = _module(["seed"], env)
        assert result.returncode == 0, result.stderr
        assert "added 2 users, 3 posts, 5 comments, 6 products" in result.stdout
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/products?limit=50",
                                    timeout=10) as response:
            skus = {item["sku"] for item in json.load(response)["items"]}
        assert {"DEMO-KB-01", "DEMO-BK-TD"} <= skus
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0, (tmp_path / "server.log").read_text()


@pytest.mark.gen_test
async def test_the_root_redirects_to_the_documentation(server):
    http = AsyncHTTPClient(force_instance=True)
    try:
        for method in ("GET", "HEAD"):
            response = await http.fetch(HTTPRequest(f"http://127.0.0.1:{server.port}/",
                                                    method=method, follow_redirects=False),
                                        raise_error=False)
            assert response.code == 302
            assert response.headers["Location"] == "/docs"
    finally:
        http.close()


def _health(port) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def _wait_for(predicate, process, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        assert process.poll() is None, "the dev server exited"
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_dev_mode_reloads_on_a_change_of_dotenv_and_keeps_its_database(tmp_path):
    # Autoreload watches the code and the .env file; a changed PORT in .env is the observable
    # proof that the server restarted with what the file now says, on the same database.
    first, second = free_port(), free_port()
    dotenv = tmp_path / "dev.env"
    dotenv.write_text(f"PORT={first}\n")
    env = _env(tmp_path, ENV_FILE=str(dotenv), LOG_LEVEL="INFO")
    log_path = tmp_path / "dev.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "tornado_app", "serve", "--dev"],
                                   cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: _health(first), process)
        ferretdb_lock = (tmp_path / "data" / "ferretdb" / "ferretdb.lock").read_text()
        # Autoreload notes a file's first modification time at its first check (every 0.5 s);
        # a change made before that would be taken for the file as it was.
        time.sleep(1.5)
        dotenv.write_text(f"PORT={second}\n")
        _wait_for(lambda: _health(second), process)
        assert not _health(first)
        # The embedded database held by the parent is the same one across the reload.
        assert (tmp_path / "data" / "ferretdb" / "ferretdb.lock").read_text() == ferretdb_lock
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(30)
    output = log_path.read_text()
    assert code == 0, output
    assert "restarting server" in output
    # Console lines, not JSON, and no colour when the output is not a terminal.
    assert re.search(r"^\d\d:\d\d:\d\d\.\d{3} INFO +tornado_app\.[a-z.]*server  listening on", output,
                     re.M), output
    assert "\033[" not in output


def test_read_cache_on_is_refused_with_several_workers(tmp_path):
    result = _module(["serve", "--workers", "2"],
                     _env(tmp_path, READ_CACHE="on", REDIS_URL="redis://127.0.0.1:9/0"))
    assert result.returncode == 2
    assert "READ_CACHE=on is refused with --workers N > 1" in result.stderr
    assert not (tmp_path / "data" / "ferretdb").exists()
