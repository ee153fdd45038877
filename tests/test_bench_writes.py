"""The write benchmark's own pieces (bench/writes.py, bench/dbtrace.py, bench/wrkrun.py): what it
counts must be what was answered. Not a performance test: nothing here is timed."""

import json
import shutil
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from bson import ObjectId

from bench import dbtrace, writes, wrkrun

WRK_OUTPUT = """Running 10s test @ http://127.0.0.1:4242/api/v1/posts
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   930.10ms  120.00ms   1.79s    70.00%
    Req/Sec    17.00      8.00    40.00     60.00%
  Latency Distribution
     50%  930.10ms
     75%    1.00s
     90%    1.20s
     99%    1.79s
  314 requests in 10.02s, 250.00KB read
  Non-2xx or 3xx responses: 2
Requests/sec:     31.34
Transfer/sec:     24.95KB
status 201: 200
status 503: 2
status 201: 112
"""


def test_wrk_output_gives_rate_latencies_and_duration():
    result = wrkrun.parse(WRK_OUTPUT)
    assert result["rps"] == 31.34
    assert result["p50_ms"] == pytest.approx(930.1)
    assert result["p99_ms"] == pytest.approx(1790.0)
    assert result["requests"] == 314
    assert result["seconds"] == pytest.approx(10.02)
    assert result["non_2xx"] == 2


def test_status_counts_of_all_threads_are_added_up():
    assert writes.statuses(WRK_OUTPUT) == {"201": 312, "503": 2}


def test_only_a_filter_of_id_alone_is_served_by_the_primary_key():
    oid = ObjectId()
    assert dbtrace.pushdown({"_id": oid})
    assert dbtrace.pushdown({"_id": "event_log"})
    assert not dbtrace.pushdown({"_id": oid, "_outbox.0.cid": oid})
    assert not dbtrace.pushdown({"_id": {"$in": [oid]}})
    assert not dbtrace.pushdown({})


def test_a_filter_shape_names_fields_and_operators_not_values():
    oid = ObjectId()
    assert dbtrace.shape({"_id": oid, "_gone": {"$ne": True}}) == "{_id: ObjectId, _gone: {$ne: bool}}"


def test_traced_commands_are_the_difference_of_two_readings_per_201():
    first = {"update posts {_id: ObjectId}": {"count": 10, "failed": 0, "seconds": 1.0,
                                              "pushdown": True}}
    second = {"update posts {_id: ObjectId}": {"count": 110, "failed": 0, "seconds": 3.0,
                                               "pushdown": True},
              "insert posts": {"count": 100, "failed": 1, "seconds": 0.5, "pushdown": True}}
    rows = writes.trace_per_201(first, second, created=100)
    assert list(rows) == ["update posts {_id: ObjectId}", "insert posts"]  # most time first
    assert rows["update posts {_id: ObjectId}"] == {
        "per_201": 1.0, "failed_per_201": 0.0, "mean_ms": 20.0, "ms_per_201": 20.0,
        "pushdown": True}
    assert rows["insert posts"]["failed_per_201"] == 0.01


def test_the_ratio_is_after_over_before_of_the_medians_and_of_each_pair():
    runs = [{"before": {"created_per_s": b}, "after": {"created_per_s": a}}
            for b, a in ((100.0, 90.0), (200.0, 100.0), (120.0, 96.0))]
    summary = writes.summarize({"runs": runs, "targets": {"before": "x", "after": "y"}})
    assert summary["before"]["created_per_s"]["median"] == 120.0
    assert summary["after"]["created_per_s"]["median"] == 96.0
    assert summary["ratio_of_medians"] == pytest.approx(0.8)
    assert summary["ratio_per_pair"] == pytest.approx([0.9, 0.5, 0.8])


class _Recorder(BaseHTTPRequestHandler):
    """Answers every other request 201 and the others 503, and records what it was sent."""
    lock = threading.Lock()
    seen: list = []
    answered: Counter = Counter()

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            self.seen.append((self.path, self.headers["Authorization"],
                              self.headers["Content-Type"], body))
            status = 201 if len(self.seen) % 2 else 503
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")
        with self.lock:
            self.answered[str(status)] += 1

    def log_message(self, *args):
        pass


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_the_lua_script_posts_the_body_with_the_token_and_counts_answers_by_status(tmp_path):
    _Recorder.seen, _Recorder.answered = [], Counter()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        script = tmp_path / "post.lua"
        script.write_text(writes.lua_script("the.token"))
        result = wrkrun.run(f"http://127.0.0.1:{server.server_port}/api/v1/posts", "1s",
                            threads=2, connections=4, script=str(script), timeout="10s")
    finally:
        server.shutdown()
        server.server_close()
    counted = writes.statuses(result["out"])
    assert set(counted) == {"201", "503"}
    assert sum(counted.values()) == result["requests"]
    # wrk may stop before reading the last few answers the server sent, never the reverse.
    assert 0 <= _Recorder.answered["201"] - counted["201"] <= 4
    assert {(path, auth, ctype) for path, auth, ctype, _ in _Recorder.seen} == {
        ("/api/v1/posts", "Bearer the.token", "application/json")}
    assert all(json.loads(body) == writes.BODY for *_, body in _Recorder.seen)
