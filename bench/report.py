"""BENCHMARKS.md from the results JSON that the scenarios saved (bench/results/MODE/*.json).

Every figure is "median (min–max)" over the runs; a ratio column lists ours/peer run by run,
then its median. Full mode writes BENCHMARKS.md at the top of the repository; quick mode
writes bench/results/quick/BENCHMARKS.md, so a smoke run never overwrites the real figures.
"""

import json
import time

from . import machine
from .config import ROOT
from .stats import ratios, summary

# Ours with READ_CACHE=off in the http scenario (bench/httpload.py), beside ours as it starts.
UNCACHED = "ours-uncached"

RATE_FULL = (15000, 20, 30)  # bench/rate.py FULL

KB = 1024
PEERS = ("tornado", "fastapi")
LABELS = {"ours": "ours", "tornado": "bare Tornado", "fastapi": "FastAPI/uvicorn",
          "before": "before (another checkout)", UNCACHED: "ours, READ_CACHE=off"}


def report_path(mode):
    return ROOT / "BENCHMARKS.md" if mode.name == "full" else mode.results_dir / "BENCHMARKS.md"


def load(mode) -> dict:
    out = {}
    for path in sorted(mode.results_dir.glob("*.json")):
        try:
            out[path.stem] = json.loads(path.read_text())
        except ValueError:
            continue
    return out


# --- picking values out of the runs -------------------------------------------------------------

def per_run(data: dict, target: str, pick) -> list:
    """pick(run result) for each run of `target`; None where the run failed or lacks it."""
    out = []
    for run in data.get("runs", []):
        result = run.get(target)
        try:
            out.append(None if result is None or "error" in result else pick(result))
        except (KeyError, TypeError, ZeroDivisionError):
            out.append(None)
    return out


def num(value, digits: int = 0) -> str:
    if value is None:
        return "–"
    if abs(value) >= 100 or digits == 0:
        return f"{value:,.{digits}f}"
    return f"{value:,.{digits}f}"


def cell(values, digits: int = 0, scale: float = 1.0) -> str:
    s = summary([v * scale if v is not None else None for v in values])
    if s is None:
        return "–"
    if len(s["runs"]) == 1 or num(s["min"], digits) == num(s["max"], digits):
        return num(s["median"], digits)
    return f"{num(s['median'], digits)} ({num(s['min'], digits)}–{num(s['max'], digits)})"


def ratio_cell(ours: list, peer: list) -> str:
    rs = ratios(ours, peer)
    present = [r for r in rs if r is not None]
    if not present:
        return "–"
    runs = ", ".join("–" if r is None else f"{r:.2f}" for r in rs)
    if len(present) == 1:
        return runs
    return f"{runs} (median {summary(present)['median']:.2f})"


def median(values):
    s = summary(values)
    return None if s is None else s["median"]


# --- sections -----------------------------------------------------------------------------------

def comparison(data: dict, rows, targets=("ours",) + PEERS) -> list[str]:
    """rows: (label, pick, digits, scale). A table with one column per target and ratios."""
    present = [t for t in targets if any(t in run for run in data.get("runs", []))]
    peers = [t for t in present if t != "ours"]
    head = ["figure"] + [LABELS[t] for t in present]
    if "ours" in present:
        head += [f"ours/{LABELS[p]} per run" for p in peers]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for label, pick, digits, scale in rows:
        values = {t: per_run(data, t, pick) for t in present}
        row = [label] + [cell(values[t], digits, scale) for t in present]
        if "ours" in present:
            row += [("" if label in NO_RATIO else ratio_cell(values["ours"], values[p]))
                    for p in peers]
        lines.append("| " + " | ".join(row) + " |")
    return lines


LOAD_ROW = "machine load average (1 min) when the run started"
NO_RATIO = {LOAD_ROW, "connections asked for", "connections held",
            "connections that got the event", "subscribed per second (ours: subscribe op and its ack)",
            "machine load average (1 min) before the hello load", "non-2xx answers (hello + post)"}

GC_ROWS = ("ours: collector pauses in the whole run (tornado_app_gc_pause_seconds of /metrics)",
           "ours: collector pauses over 50 ms while opening",
           "ours: collector pauses over 50 ms while idle or receiving",
           "ours: longest collector pause, at most (ms: its histogram bucket)")
NO_RATIO |= set(GC_ROWS)

HOLD_ROWS = [
    (LOAD_ROW, lambda r: r["loadavg_start"], 1, 1),
    ("connections asked for", lambda r: r["n"], 0, 1),
    ("connections held", lambda r: r.get("subscribed", r["opened"]), 0, 1),
    ("opened per second (WebSocket: handshakes/s; poll: requests sent/s)",
     lambda r: r["opens_per_s"], 0, 1),
    ("subscribed per second (ours: subscribe op and its ack)", lambda r: r["subscribes_per_s"],
     0, 1),
    ("server CPU seconds while opening", lambda r: r["server_cpu_open_s"], 1, 1),
    ("client CPU seconds while opening (all client processes)", lambda r: r["client_cpu_open_s"],
     1, 1),
    ("server RSS before (MB)", lambda r: r["rss_before_kb"], 1, 1 / 1024),
    ("server RSS after (MB)", lambda r: r["rss_after_kb"], 1, 1 / 1024),
    ("**server memory per connection (KB)**", lambda r: r["bytes_per_conn"], 1, 1 / KB),
    ("connections that got the event", lambda r: r["got"], 0, 1),
    ("**event sent → last connection has it (ms)**", lambda r: r["last_ms"], 1, 1),
    ("event sent → first connection has it (ms)", lambda r: r["first_ms"], 1, 1),
    ("first → last connection (ms): the fan-out itself", lambda r: r["spread_ms"], 1, 1),
    ("trigger request answered after (ms)", lambda r: r["trigger"]["seconds"], 1, 1000),
    ("probe: longest answer while opening (ms)", lambda r: r["probe"]["open"]["max_ms"], 1, 1),
    ("probe: longest answer while idle (ms)", lambda r: r["probe"]["idle"]["max_ms"], 1, 1),
    ("probe: longest answer during the broadcast (ms)",
     lambda r: r["probe"]["broadcast"]["max_ms"], 1, 1),
    (GC_ROWS[0], lambda r: sum(r["gc"][phase]["pauses"] for phase in r["gc"]), 0, 1),
    (GC_ROWS[1], lambda r: r["gc"]["open"]["over_50ms"], 0, 1),
    (GC_ROWS[2], lambda r: r["gc"]["idle"]["over_50ms"] + r["gc"]["broadcast"]["over_50ms"],
     0, 1),
    (GC_ROWS[3], lambda r: max(g["longest_at_most_s"] or 0 for g in r["gc"].values()) * 1000,
     0, 1),
]

HTTP_ROWS = [
    ("machine load average (1 min) before the hello load", lambda r: r["hello"]["loadavg_start"],
     1, 1),
    ("hello: ours /health vs peers' /hello, requests/s", lambda r: r["hello"]["rps"], 0, 1),
    ("hello: p50 latency (ms)", lambda r: r["hello"]["p50_ms"], 2, 1),
    ("hello: p99 latency (ms)", lambda r: r["hello"]["p99_ms"], 2, 1),
    ("GET one post by id, requests/s", lambda r: r["post"]["rps"], 0, 1),
    ("GET one post: p50 latency (ms)", lambda r: r["post"]["p50_ms"], 2, 1),
    ("GET one post: p99 latency (ms)", lambda r: r["post"]["p99_ms"], 2, 1),
    ("hello: server CPU µs per request", lambda r: r["hello"].get("server_cpu_us"), 1, 1),
    ("GET one post: server CPU µs per request", lambda r: r["post"].get("server_cpu_us"), 1, 1),
    ("GET one post: … of it in the kernel (system CPU)",
     lambda r: r["post"].get("server_system_us"), 1, 1),
    ("GET one post: … in the process itself (user CPU: the framework, the driver, ours)",
     lambda r: r["post"]["server_cpu_us"] - r["post"]["server_system_us"], 1, 1),
    ("GET one post: FerretDB CPU µs per request", lambda r: r["post"].get("db_cpu_us"), 1, 1),
    ("non-2xx answers (hello + post)",
     lambda r: r["hello"]["non_2xx"] + r["post"]["non_2xx"], 0, 1),
]

MIXED_ROWS = [
    ("/health requests/s without subscribers", lambda r: r["without"]["health"]["rps"], 0, 1),
    ("/health requests/s with the subscribers", lambda r: r["with"]["health"]["rps"], 0, 1),
    ("/health p99 without (ms)", lambda r: r["without"]["health"]["p99_ms"], 2, 1),
    ("/health p99 with (ms)", lambda r: r["with"]["health"]["p99_ms"], 2, 1),
    ("**/health p99 with / without**",
     lambda r: r["with"]["health"]["p99_ms"] / r["without"]["health"]["p99_ms"], 2, 1),
    ("GET one post requests/s without", lambda r: r["without"]["post"]["rps"], 0, 1),
    ("GET one post requests/s with", lambda r: r["with"]["post"]["rps"], 0, 1),
    ("GET one post p99 without (ms)", lambda r: r["without"]["post"]["p99_ms"], 2, 1),
    ("GET one post p99 with (ms)", lambda r: r["with"]["post"]["p99_ms"], 2, 1),
    ("**GET one post p99 with / without**",
     lambda r: r["with"]["post"]["p99_ms"] / r["without"]["post"]["p99_ms"], 2, 1),
    ("subscribers held during the load", lambda r: r["hold"]["subscribed"], 0, 1),
]


def section_hold(data, title, intro) -> list[str]:
    return [f"## {title}", "", intro, "", f"Command: `{data['command']}`", "",
            *comparison(data, HOLD_ROWS), ""]


def section_workers(data) -> list[str]:
    name = next(iter(data.get("targets", {"ours-3w": ""})))
    rows = [r for r in HOLD_ROWS if not r[0].startswith("probe: longest answer while opening")]
    lines = ["## Three workers and Redis", "",
             f"`run.py --workers {data.get('workers', 3)}` with REDIS_URL of a redis-server "
             "started for the run; subscribed WebSocket connections spread over client processes "
             "(5,000 each, each from its own 127.x.y.z source address); one post created, its "
             "event reaching the other workers through Redis. Memory and CPU are summed over "
             "the workers.", "", f"Command: `{data['command']}`", ""]
    lines += comparison(data, rows, targets=(name,)) if name == "ours" else \
        _single(data, name, rows)
    fds = per_run(data, name, lambda r: ", ".join(str(v) for v in r["fds"].values()))
    lines += ["", "Open file descriptors per worker after opening, run by run: "
              + "; ".join(f or "–" for f in fds) + " (each process is capped at 20000).", ""]
    return lines


def _single(data, target, rows) -> list[str]:
    lines = ["| figure | " + target + " |", "| --- | --- |"]
    for label, pick, digits, scale in rows:
        lines.append(f"| {label} | {cell(per_run(data, target, pick), digits, scale)} |")
    return lines


DEFLATE_LABELS = {"ours-plain": "ours, plain clients", "ours-deflate": "ours, deflate clients",
                  "tornado-deflate": "bare Tornado, compression on",
                  "websockets-deflate": "websockets, default compression"}
DEFLATE_ROWS = [
    (LOAD_ROW, lambda r: r["loadavg_start"], 1, 1),
    ("connections held", lambda r: r.get("subscribed", r["opened"]), 0, 1),
    ("connections whose event came compressed", lambda r: r["got_compressed"], 0, 1),
    ("**event frame on the wire (bytes)**", lambda r: r["event_wire_bytes"], 0, 1),
    ("**server memory per idle connection (KB)**", lambda r: r["bytes_per_conn"], 2, 1 / KB),
    ("**events sent → last connection has the typical one (ms)**", lambda r: r["last_ms"], 1,
     1),
    ("first → last connection (ms): the fan-out itself", lambda r: r["spread_ms"], 1, 1),
    ("server CPU seconds while opening", lambda r: r["server_cpu_open_s"], 1, 1),
]


def section_deflate(data) -> list[str]:
    """permessage-deflate side by side: ratios of ours with deflate clients to each other."""
    present = [t for t in DEFLATE_LABELS if any(t in run for run in data.get("runs", []))]
    others = [t for t in present if t != "ours-deflate"]
    head = ["figure"] + [DEFLATE_LABELS[t] for t in present] + \
        [f"ours deflate / {DEFLATE_LABELS[t]} per run" for t in others]
    lines = ["## WebSocket compression (permessage-deflate)", "",
             "N subscribers per target, idle, then two post events to all of them: a short "
             "one, then a typical one (1 KB of prose in `content`), which is what is measured "
             "(a subscriber in a stream gets an event with the one before it in its window). "
             "Clients that offer send what a browser sends (`permessage-deflate; "
             "client_max_window_bits`), send their subscribe compressed and inflate both events "
             "with their context kept, as a browser does. Ours compresses each event once for "
             "every compressed subscriber: deflated after the channel's previous event for the "
             "peers that inflated that one last (it refers back to it), on its own for the "
             "others; Tornado and websockets keep a compressor per connection and compress once "
             "per subscriber. Peers broadcast events of the same shape and content (`GET "
             "/broadcast` for websockets). Times run from the first event's trigger to the last "
             "subscriber having the typical one. What one typical event can get to on its own: "
             "`python -m bench.deflate_floor`.", "",
             f"Command: `{data['command']}`", "",
             "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    no_ratio = {LOAD_ROW, "connections held", "connections whose event came compressed"}
    for label, pick, digits, scale in DEFLATE_ROWS:
        values = {t: per_run(data, t, pick) for t in present}
        row = [label] + [cell(values[t], digits, scale) for t in present]
        row += ["" if label in no_ratio or "ours-deflate" not in values
                else ratio_cell(values["ours-deflate"], values[t]) for t in others]
        lines.append("| " + " | ".join(row) + " |")
    extra = [None if d is None or p is None else (d - p) / KB for d, p in
             zip(per_run(data, "ours-deflate", lambda r: r["bytes_per_conn"]),
                 per_run(data, "ours-plain", lambda r: r["bytes_per_conn"]))]
    lines += ["", "Memory a compressed subscriber costs over a plain one (KB, ours-deflate − "
              "ours-plain per run; the target is ≤ 3): " + cell(extra, 2) + ".", ""]
    lines += deflate_verdict(data, extra)
    cpu = data.get("fanout_cpu") or {}
    if cpu.get("plain"):
        lines += [f"Ours' fan-out in-process (`bench/fanout_cpu.py`: the real hub and sessions, "
                  f"sockets that send nothing; {cpu['subscribers']:,} subscribers, the same "
                  "event; ms, median of 15 events per run): plain sessions "
                  f"{cell(cpu['plain'], 2)}, compressed sessions {cell(cpu['deflate'], 2)}; "
                  "compressed/plain per run: " + ratio_cell(cpu["deflate"], cpu["plain"]) + ".",
                  ""]
    return lines


# Issue #14's thresholds, in one place: the table of its targets and the verdict under each
# scenario's section both read them.
T14 = {"deflate_bytes": 0.5, "deflate_time": 1.15, "deflate_kb": 3,  # ours compressed / plain
       "storm_n": 15000, "storm_s": 6, "storm_overflows": 0,
       "rate_n": 15000, "rate_p99_ms": 250, "rate_cpu": 0.5,  # cpu: ours / bare Tornado
       "get_post": 1.0, "health": 1.0}  # requests/s: ours / FastAPI, ours / bare Tornado


def deflate_verdict(data, extra: list) -> list[str]:
    size = mr(data, "ours-deflate", "ours-plain", lambda r: r["event_wire_bytes"])
    time_ = mr(data, "ours-deflate", "ours-plain", lambda r: r["last_ms"])
    memory = median(extra)
    if size is None or time_ is None or memory is None:
        return []
    met = (size <= T14["deflate_bytes"] and time_ <= T14["deflate_time"]
           and memory <= T14["deflate_kb"])
    return [f"Targets of issue #14 (bytes per typical post event ≤ {T14['deflate_bytes']}× plain, "
            f"fan-out time ≤ {T14['deflate_time']}× plain, ≤ {T14['deflate_kb']} KB per idle "
            f"compressed subscriber): {'met' if met else 'not met'} "
            f"(medians: bytes {size:.2f}×, time {time_:.2f}×, +{memory:.2f} KB).", ""]


def section_http(data) -> list[str]:
    cmds = sorted({r[t][k]["command"].split(" http")[0] for r in data.get("runs", [])
                   for t in r if "error" not in r[t] for k in ("hello", "post")})
    return ["## HTTP through wrk", "",
            "wrk against each server in turn, each freshly started. `GET one post` reads the "
            "same post document, from the same FerretDB, in all of them (ours: "
            "`/api/v1/posts/{id}`, with its ETag and JSON shaping; peers: an `AsyncMongoClient` "
            "`find_one` by `_id`, default pool). Ours runs twice: as it starts by default "
            "(`READ_CACHE=auto`, on against FerretDB: after the first read the post is served "
            "from the process's memory until a write to posts), and with `READ_CACHE=off`, "
            "where every request reads FerretDB as the peers' do.", "",
            f"Command: `{data['command']}`; load: `{'`, `'.join(cmds)} URL`", "",
            *comparison(data, HTTP_ROWS, ("ours", UNCACHED) + PEERS), ""]


def section_mixed(data) -> list[str]:
    return ["## Mixed: HTTP load next to idle subscribers", "",
            "wrk on ours without any subscriber, then on a fresh server that holds the "
            "subscribed WebSockets (idle) during the same wrk load.", "",
            f"Command: `{data['command']}`", "", *_single(data, "ours", MIXED_ROWS), ""]


WRITES_ROWS = [("POST /api/v1/posts, 201/s", lambda r: r.get("created_per_s"), 1, 1.0),
               ("p50 latency (ms)", lambda r: r.get("p50_ms"), 1, 1.0),
               ("p99 latency (ms)", lambda r: r.get("p99_ms"), 1, 1.0),
               ("server CPU per 201 (µs)", lambda r: r.get("server_cpu_us"), 0, 1.0),
               ("FerretDB CPU per 201 (µs)", lambda r: r.get("db_cpu_us"), 0, 1.0),
               ("non-201 answers", lambda r: r.get("non_201"), 0, 1.0)]


def section_writes(data) -> list[str]:
    trees = list(data.get("targets", {}))
    lines = ["## Writes: POST /api/v1/posts", "",
             "wrk with a Lua script posting one JSON body with a bearer token; only 201s count. "
             "Each run on a fresh FerretDB and a fresh server"
             + (", before and after run by turns" if "before" in trees else "") + ".", "",
             f"Command: `{data['command']}`; load: `{data.get('load')}`", "",
             "| figure | " + " | ".join(f"{t} (`{data['targets'][t]}`)" for t in trees) + " |",
             "| --- |" + " --- |" * len(trees)]
    for label, pick, digits, scale in WRITES_ROWS:
        cells = [cell(per_run(data, t, pick), digits, scale) for t in trees]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if "before" in trees:
        pick = WRITES_ROWS[0][1]
        lines.append("| after/before, 201/s | | "
                     + ratio_cell(per_run(data, "after", pick), per_run(data, "before", pick))
                     + " |")
    return lines + [""]


STORM_ROWS = [
    (LOAD_ROW, lambda r: r["loadavg_start"], 1, 1),
    ("subscribers dropped, then reconnecting at once with since", lambda r: r["dropped"], 0, 1),
    ("resumed (ack and every missed event received)", lambda r: r["resumed"], 0, 1),
    ("seconds until the last has resumed", lambda r: r["last_resumed_s"], 2, 1),
    ("seconds until half have resumed", lambda r: r["p50_resumed_s"], 2, 1),
    ("seconds until the last is connected (101 received)", lambda r: r["connected_s"], 2, 1),
    ("listen-queue overflows (TcpExtListenOverflows, whole machine)",
     lambda r: r["tcp"]["ListenOverflows"], 0, 1),
    ("SYN cookies sent (TcpExtSyncookiesSent)", lambda r: r["tcp"]["SyncookiesSent"], 0, 1),
    ("server CPU seconds from the first reconnect to the last resumed",
     lambda r: r["server_cpu_s"], 2, 1),
    ("client errors", lambda r: sum(r["client_errors"].values()), 0, 1),
]

RATE_ROWS = [
    (LOAD_ROW, lambda r: r["loadavg_start"], 1, 1),
    ("subscribers", lambda r: r["held"], 0, 1),
    ("events published (per second × seconds)", lambda r: r["published"], 0, 1),
    ("delivery latency p50 (ms)", lambda r: r["p50_ms"], 0, 1),
    ("delivery latency p99 (ms)", lambda r: r["p99_ms"], 0, 1),
    ("delivery latency max (ms)", lambda r: r["max_ms"], 0, 1),
    ("server CPU per delivered event (µs)", lambda r: r["cpu_us_per_delivered"], 2, 1),
    ("server CPU in use (cores, first event to last delivery)",
     lambda r: r["server_cpu_s"] / r["cpu_window_s"], 2, 1),
    ("… of it in the kernel (system share: the sends)",
     lambda r: r["server_system_s"] / r["server_cpu_s"], 2, 1),
    ("publishing request (ours: POST /api/v1/posts), p50 ms", lambda r: r["publish_p50_ms"], 0, 1),
    ("publishing request, max ms", lambda r: r["publish_max_ms"], 0, 1),
    ("ours: events per write (events_delivered ÷ event_handovers)",
     lambda r: r["events_per_write"], 2, 1),
    ("events not delivered (of subscribers × published)", lambda r: r["undelivered"], 0, 1),
    ("seconds from the last publish to the last delivery",
     lambda r: r["last_after_publishing_s"], 2, 1),
    ("client CPU seconds (all client processes, same window)", lambda r: r["client_cpu_s"], 1, 1),
]
NO_RATIO |= {STORM_ROWS[0][0], STORM_ROWS[1][0], STORM_ROWS[2][0], "subscribers",
             "events published (per second × seconds)", "client errors",
             "events not delivered (of subscribers × published)",
             "ours: events per write (events_delivered ÷ event_handovers)"}


def section_storm(data) -> list[str]:
    settings = data.get("tcp_settings") or {}
    return ["## Reconnect storm", "",
            "N WebSockets subscribed to `posts` (opened at most 96 handshakes at a time), one "
            f"event, then every connection is dropped and {data.get('missed', 3)} events are "
            "published; then all "
            "reconnect at once (every client process opens all its connections together) and "
            "subscribe with `since` = the last seq each had. A connection has resumed once its "
            "`subscribed` ack and the missed events have arrived. Listen-queue overflows are "
            "the kernel's TcpExtListenOverflows counter over the reconnect (per network "
            "namespace: anything else overflowing a queue meanwhile counts too).", "",
            "Kernel settings: " + ", ".join(f"`{k}` = {v}" for k, v in settings.items()), "",
            f"Command: `{'STORM_BEFORE=' + data['before'] + ' ' if data.get('before') else ''}"
            f"{data['command']}`", "",
            *(comparison(data, STORM_ROWS, targets=("before", "ours")) if data.get("before")
              else _single(data, "ours", STORM_ROWS)), "",
            *storm_verdict(data), ""]


def storm_verdict(data) -> list[str]:
    n = m(data, "ours", lambda r: r["resumed"])
    last = m(data, "ours", lambda r: r["last_resumed_s"])
    overflows = m(data, "ours", lambda r: r["tcp"]["ListenOverflows"])
    if None in (n, last, overflows):
        return []
    met = storm_met(n, last, overflows)
    return [f"Target of issue #14 ({T14['storm_n']:,} resume within {T14['storm_s']} s, "
            f"{T14['storm_overflows']} overflows): "
            f"{'met' if met else 'not met'} (median: {n:,.0f} resumed, last after {last:.1f} s, "
            f"{overflows:,.0f} overflows)."]


def storm_met(resumed, last, overflows) -> bool:
    return (resumed >= T14["storm_n"] and last <= T14["storm_s"]
            and overflows <= T14["storm_overflows"])


def section_rate(data) -> list[str]:
    sizes = data.get("sizes", {})
    return ["## Sustained event rate", "",
            f"{sizes.get('n', 'N'):,} idle WebSockets (ours: subscribed to `posts`), then "
            f"{sizes.get('rate', '?')} events a second for {sizes.get('seconds', '?')} s, each "
            "sent on time whatever the answers (ours: `POST /api/v1/posts`, stored and fanned "
            "out; peers: `POST /broadcast`). Each event carries the time.time() it was sent; "
            "each client notes now − that for every event it receives (1 ms buckets). Server "
            "CPU: user + system seconds of the server process from the first event to the "
            "last delivery, ÷ events delivered (for ours it includes storing each event). "
            "Waiting ends when every subscriber has every event, or nothing arrived for 10 s.",
            "", f"Command: `{rate_env(sizes)}{data['command']}`", "",
            *comparison(data, RATE_ROWS), "",
            *rate_verdict(data), ""]


def rate_env(sizes: dict) -> str:
    """RATE_N=... etc. for the sizes that differ from the full ones."""
    full = dict(zip(("n", "rate", "seconds"), RATE_FULL))
    names = {"n": "RATE_N", "rate": "RATE_EVENTS", "seconds": "RATE_SECONDS"}
    return "".join(f"{names[key]}={value} " for key, value in sizes.items()
                   if key in names and value != full.get(key))


def rate_verdict(data) -> list[str]:
    p99 = m(data, "ours", lambda r: r["p99_ms"])
    cpu = mr(data, "ours", "tornado", lambda r: r["cpu_us_per_delivered"])
    n = data.get("sizes", {}).get("n")
    if p99 is None or cpu is None:
        return []
    met = p99 <= T14["rate_p99_ms"] and cpu <= T14["rate_cpu"]
    return [f"Targets of issue #14 (p99 ≤ {T14['rate_p99_ms']} ms, server CPU per delivered event "
            f"≤ {T14['rate_cpu']}× bare Tornado's, at {T14['rate_n']:,} subscribers): "
            f"{'met' if met else 'not met'} at {n:,} "
            f"subscribers (median p99 {p99:.0f} ms, CPU ratio {cpu:.2f})."]


# --- targets of the issues ---------------------------------------------------------------------

def m(data, target, pick):
    """The median over the runs of pick(result) for `target`."""
    return median(per_run(data, target, pick))


def mr(data, a, b, pick):
    """The median of the per-run ratios a/b of pick(result)."""
    return median(ratios(per_run(data, a, pick), per_run(data, b, pick)))


def check(value, test):
    return None if value is None else test(value)


def target_row(goal, measured, ok) -> str:
    verdict = "–" if ok is None else ("met" if ok else "**not met**")
    return f"| {goal} | {measured} | {verdict} |"


def targets_table(results: dict) -> list[str]:
    ws, poll, http = results.get("ws", {}), results.get("poll", {}), results.get("http", {})
    workers, mixed = results.get("workers", {}), results.get("mixed", {})
    wname = next(iter(workers.get("targets", {"ours-3w": ""})))

    rows = []

    def row(goal, measured, ok):
        rows.append(target_row(goal, measured, ok))

    mem = m(ws, "ours", lambda r: r["bytes_per_conn"])
    held = m(ws, "ours", lambda r: r["subscribed"])
    row("19,000 idle authenticated subscribers in one worker, ≤ 8 KB each",
        f"{num(held)} held, {num(mem and mem / KB, 1)} KB each",
        check(mem, lambda v: v <= 8 * KB and (held or 0) >= 19000))
    last = m(ws, "ours", lambda r: r["last_ms"])
    spread = m(ws, "ours", lambda r: r["spread_ms"])
    row("one event to all of them: last has it within 100 ms (median)",
        f"{num(last, 1)} ms from the POST ({num(spread, 1)} ms first → last)",
        check(last, lambda v: v <= 100))
    for peer, factor in (("tornado", 10), ("fastapi", 3)):
        r = mr(ws, peer, "ours", lambda r: r["last_ms"])
        rs = mr(ws, peer, "ours", lambda r: r["spread_ms"])
        row(f"… at least {factor}× faster than {LABELS[peer]} (same run)",
            f"{num(r, 2)}× from the trigger, {num(rs, 2)}× first → last",
            check(r, lambda v: v >= factor))
    rate = m(ws, "ours", lambda r: r["opens_per_s"])
    row("≥ 2,500 authenticated WebSocket handshakes/s per worker", f"{num(rate)} /s",
        check(rate, lambda v: v >= 2500))
    pmem = m(poll, "ours", lambda r: r["bytes_per_conn"])
    pheld = m(poll, "ours", lambda r: r["opened"])
    row("19,000 pending long-polls, ≤ 8 KB each",
        f"{num(pheld)} pending, {num(pmem and pmem / KB, 1)} KB each",
        check(pmem, lambda v: v <= 8 * KB and (pheld or 0) >= 19000))
    plast = m(poll, "ours", lambda r: r["last_ms"])
    row("… all answered within 0.5 s of the event", f"{num(plast, 1)} ms",
        check(plast, lambda v: v <= 500))
    stalls = [v for d in (ws, poll) for phase in ("idle", "broadcast")
              for v in per_run(d, "ours", lambda r, p=phase: r["probe"][p]["max_ms"])
              if v is not None]
    gc_runs = [r["gc"][phase] for d in (ws, poll) for phase in ("idle", "broadcast")
               for r in per_run(d, "ours", lambda r: r) if r and "gc" in r]
    over = sum(g["over_50ms"] for g in gc_runs) if gc_runs else None
    pauses = sum(g["pauses"] for g in gc_runs)
    longest = max((g["longest_at_most_s"] or 0 for g in gc_runs), default=0)
    row("no GC pause over 50 ms while 19,000 are idle or receiving",
        f"{num(over)} of {num(pauses)} collector pauses over 50 ms, longest ≤ {num(longest * 1000)}"
        f" ms (tornado_app_gc_pause_seconds of /metrics, WebSocket and long-poll runs); longest /health "
        f"answer, any stall: {num(max(stalls) if stalls else None, 1)} ms (probe, see below)",
        check(over, lambda v: v == 0))
    wheld = m(workers, wname, lambda r: r["subscribed"])
    wlast = m(workers, wname, lambda r: r["last_ms"])
    row("3 workers + Redis: ≥ 50,000 connections", f"{num(wheld)} held",
        check(wheld, lambda v: v >= 50000))
    row("… one event to all of them within 1 s", f"{num(wlast, 1)} ms",
        check(wlast, lambda v: v <= 1000))
    post = mr(http, "ours", "fastapi", lambda r: r["post"]["rps"])
    row("GET /api/v1/posts/{id} at least as fast as the FastAPI peer",
        f"ours/FastAPI requests/s {num(post, 2)}", check(post, lambda v: v >= 1.0))
    hello = mr(http, "ours", "tornado", lambda r: r["hello"]["rps"])
    row("/health within 10% of bare Tornado's hello", f"ours/Tornado requests/s {num(hello, 2)}",
        check(hello, lambda v: v >= 0.9))
    mix = m(mixed, "ours", lambda r: r["with"]["health"]["p99_ms"] / r["without"]["health"]["p99_ms"])
    row("mixed: HTTP p99 with 19,000 idle subscribers ≤ 2× without",
        f"/health p99 ratio {num(mix, 2)}", check(mix, lambda v: v <= 2))
    return ["| target (issue #5) | measured (median) | |", "| --- | --- | --- |", *rows]


def targets_14_table(results: dict) -> list[str]:
    """Issue #14's targets, each with this suite's figure (medians of the runs, ratios per run)."""
    deflate, storm, rate = results.get("deflate", {}), results.get("storm", {}), results.get("rate", {})
    http, autobahn = results.get("http", {}), results.get("autobahn", {})
    rows = []

    def row(goal, measured, ok):
        rows.append(target_row(goal, measured, ok))

    size = mr(deflate, "ours-deflate", "ours-plain", lambda r: r["event_wire_bytes"])
    row(f"bytes on the wire per typical post event, compressed ≤ {T14['deflate_bytes']}× plain",
        f"{num(size, 2)}× ({num(m(deflate, 'ours-deflate', lambda r: r['event_wire_bytes']))} "
        f"vs {num(m(deflate, 'ours-plain', lambda r: r['event_wire_bytes']))} B)",
        check(size, lambda v: v <= T14["deflate_bytes"]))
    spent = mr(deflate, "ours-deflate", "ours-plain", lambda r: r["last_ms"])
    row(f"fan-out time with compression ≤ {T14['deflate_time']}× without", f"{num(spent, 2)}× "
        "(events sent → last connection has the typical one)",
        check(spent, lambda v: v <= T14["deflate_time"]))
    memory = m(deflate, "ours-deflate", lambda r: r["bytes_per_conn"] / KB)
    row(f"memory per idle compressed subscriber ≤ {T14['deflate_kb']} KB", f"{num(memory, 2)} KB",
        check(memory, lambda v: v <= T14["deflate_kb"]))
    for peer in ("tornado-deflate", "websockets-deflate"):
        theirs = m(deflate, peer, lambda r: r["bytes_per_conn"] / KB)
        if theirs is None:
            continue
        row(f"… side by side with {DEFLATE_LABELS[peer]}",
            f"memory {num(memory, 2)} vs {num(theirs, 1)} KB per connection; fan-out time "
            f"ours/theirs {num(mr(deflate, 'ours-deflate', peer, lambda r: r['last_ms']), 2)}×",
            None)
    cases = ((autobahn.get("runs") or [{}])[0].get("ours") or {})
    row("Autobahn TestSuite 12.* and 13.* pass",
        f"{cases['passed']} of {cases['cases']} conform" if "cases" in cases else "not run",
        check(cases.get("cases"), lambda v: v > 0 and cases["passed"] == v))
    resumed = m(storm, "ours", lambda r: r["resumed"])
    last = m(storm, "ours", lambda r: r["last_resumed_s"])
    overflows = m(storm, "ours", lambda r: r["tcp"]["ListenOverflows"])
    row(f"{T14['storm_n']:,} clients reconnect and resume within {T14['storm_s']} s, "
        f"{T14['storm_overflows']} listen overflows",
        f"{num(resumed)} resumed, the last after {num(last, 2)} s, {num(overflows)} overflows",
        None if None in (resumed, last, overflows) else storm_met(resumed, last, overflows))
    held = m(rate, "ours", lambda r: r["held"])
    p99 = m(rate, "ours", lambda r: r["p99_ms"])
    row(f"20 events/s to {T14['rate_n']:,} subscribers: p99 delivery ≤ {T14['rate_p99_ms']} ms",
        f"{num(p99)} ms at {num(held)} subscribers (p99 per run: "
        f"{', '.join(num(v) for v in per_run(rate, 'ours', lambda r: r['p99_ms']))})",
        check(p99, lambda v: v <= T14["rate_p99_ms"] and (held or 0) >= T14["rate_n"]))
    cpu = mr(rate, "ours", "tornado", lambda r: r["cpu_us_per_delivered"])
    row(f"… server CPU per delivered event ≤ {T14['rate_cpu']}× bare Tornado's", f"{num(cpu, 2)}×",
        check(cpu, lambda v: v <= T14["rate_cpu"]))
    post = mr(http, "ours", "fastapi", lambda r: r["post"]["rps"])
    uncached = mr(http, UNCACHED, "fastapi", lambda r: r["post"]["rps"])
    same_read = mr(http, "ours", "tornado", lambda r: r["post"]["rps"])
    row(f"GET /api/v1/posts/{{id}} ≥ {T14['get_post']}× the FastAPI peer",
        f"{num(post, 2)}× requests/s (ours/bare Tornado on the same read: {num(same_read, 2)}×; "
        f"with READ_CACHE=off, reading FerretDB every time: {num(uncached, 2)}× FastAPI)",
        check(post, lambda v: v >= T14["get_post"]))
    hello = mr(http, "ours", "tornado", lambda r: r["hello"]["rps"])
    row(f"/health ≥ {T14['health']}× bare Tornado's hello", f"{num(hello, 2)}× requests/s",
        check(hello, lambda v: v >= T14["health"]))
    return ["| target (issue #14) | measured (median) | |", "| --- | --- | --- |", *rows]


# --- one million connections, on paper ----------------------------------------------------------

KERNEL_PER_SOCKET = 4.7 * KB  # the figure for an idle socket's kernel memory on this machine
FD_CAP = 20000


def extrapolation(results: dict) -> list[str]:
    """Arithmetic from ours' measured medians; nothing here was run at that size."""
    ws = results.get("ws", {})

    def m(pick):
        return median(per_run(ws, "ours", pick))

    mem, spread = m(lambda r: r["bytes_per_conn"]), m(lambda r: r["spread_ms"])
    n, rate = m(lambda r: r["subscribed"]), m(lambda r: r["opens_per_s"])
    if None in (mem, spread, n, rate) or not n:
        return ["Not enough WebSocket figures from this run to extrapolate."]
    per_sub_us = spread / n * 1000
    workers = -(-1_000_000 // (FD_CAP - 1000))
    total_gb = 1_000_000 * (mem + KERNEL_PER_SOCKET) / 1e9
    per_core = 1_000_000 / 16
    return [
        "Arithmetic from this run's medians for ours (one worker), not a measurement:", "",
        f"- Memory: {mem / KB:.1f} KB of process memory per subscriber, plus about "
        f"{KERNEL_PER_SOCKET / KB:.1f} KB of kernel memory per idle socket (the issue's figure), "
        f"is {total_gb:.1f} GB for 1,000,000 connections: "
        f"{'within' if total_gb < 64 else 'over'} 64 GB.",
        f"- Processes: at 20,000 open files per process (the cap here) and ~19,000 "
        f"connections per worker, 1,000,000 needs at least {workers} workers, "
        f"{workers / 16:.1f} per core on 16 cores; a higher open-files limit would allow one "
        "worker per core (62,500 connections each).",
        f"- Fan-out: {per_sub_us:.1f} µs per subscriber (first → last over {n:,.0f}); with "
        f"62,500 subscribers per core, one event takes about {per_core * per_sub_us / 1e6:.2f} s "
        "per worker in parallel, plus the Redis hop to every worker.",
        f"- Reconnect storm: at {rate:,.0f} authenticated handshakes/s per worker, 16 cores "
        f"take {1_000_000 / (rate * 16):.0f} s to accept 1,000,000 clients again (every "
        "handshake also reads the token's family and its user from the database).",
    ]


# --- problems -----------------------------------------------------------------------------------

def problems(results: dict) -> list[str]:
    lines = []
    for name, data in results.items():
        if "error" in data:
            lines.append(f"- `{name}` did not run: `{data['error']}`")
        for i, run in enumerate(data.get("runs", []), 1):
            for target, result in run.items():
                if not isinstance(result, dict):
                    continue
                for part in (result, result.get("hold"), result.get("without")):
                    if not isinstance(part, dict):
                        continue
                    if "error" in part:
                        lines.append(f"- `{name}` run {i} {target}: `{part['error']}`")
                    for kind, count in (part.get("client_errors") or {}).items():
                        lines.append(f"- `{name}` run {i} {target}: {count} × `{kind}`")
                    if part.get("note"):
                        lines.append(f"- `{name}` run {i} {target}: {part['note']}")
                    if part.get("got") is not None and part.get("expected") and \
                            part["got"] < part["expected"]:
                        lines.append(f"- `{name}` run {i} {target}: only {part['got']} of "
                                     f"{part['expected']} connections got the event")
    return lines or ["- none"]


# --- the whole report ---------------------------------------------------------------------------

def busy_warning(results: dict, nproc: int) -> list[str]:
    loads = []
    for data in results.values():
        for run in data.get("runs", []):
            for result in run.values():
                if not isinstance(result, dict):
                    continue
                for part in (result, result.get("hold"), result.get("hello")):
                    if isinstance(part, dict) and part.get("loadavg_start") is not None:
                        loads.append(part["loadavg_start"])
    if not loads or max(loads) <= nproc + 0.5:
        return []
    return [f"**The machine was not quiet during this run**: the 1-minute load average was up "
            f"to {max(loads):.1f} on {nproc} cores when runs started (the benchmark itself "
            "accounts for about 2 while it runs). Other work was sharing the CPU, so these "
            "figures are lower than on a quiet machine and vary more between runs; the load "
            "of each run is in the tables.", ""]


def code_warning(results: dict) -> list[str]:
    versions = set()
    for data in results.values():
        for run in data.get("runs", []):
            for result in run.values():
                if not isinstance(result, dict):
                    continue
                for part in (result, result.get("hold"), result.get("without")):
                    if isinstance(part, dict) and part.get("server_code"):
                        versions.add(part["server_code"])
    if len(versions) <= 1:
        return []
    return [f"**The server's code changed while this suite ran**: its runs measured "
            f"{len(versions)} different versions of run.py, tornado_app/ and handlers/ "
            f"({', '.join(sorted(versions))}); figures of different runs are not comparable "
            "then. Run the suite again on code that stays put.", ""]


def write(mode):
    results = load(mode)
    facts = machine.facts()
    make = "make bench" if mode.name == "full" else "make bench-quick"
    sizes = (f"{mode.runs} run(s) per figure; ours holds {mode.n_ours:,} connections in one "
             f"worker, each peer {mode.n_peer:,}; the 3-worker scenario asks for "
             f"{mode.n_workers:,}; wrk runs {mode.wrk_duration}")
    out = [
        "# Benchmarks", "",
        f"Written by `{make}` (`python -m bench.run all{' --quick' if mode.name != 'full' else ''}`)"
        f" on {time.strftime('%Y-%m-%d %H:%M %Z')}, {mode.name} mode: {sizes}. Each scenario "
        "can be run alone with the command under its heading; the numbers below are medians "
        "with min–max over the runs, and a ratio column lists ours/peer for each run (run i "
        "of ours against run i of the peer, measured back to back), then its median.", "",
        *busy_warning(results, facts["nproc"]),
        *code_warning(results),
        "## Machine", "", "| | |", "| --- | --- |",
        *[f"| {k} | {', '.join(v) if isinstance(v, list) else v} |" for k, v in facts.items()],
        "",
        "## How it is measured", "",
        "- Every server runs as its own process, started fresh for each run on a free port, "
        "against one FerretDB (SQLite backend) per scenario; access logs are off in all three "
        "(ours: `LOG_LEVEL=WARNING`; every other feature of ours is on: auth on the upgrade, "
        "subscriptions, the event log, pings every 20 s).",
        "- The load client (`bench/loadclient.py`, `bench/wsproto.py`) is asyncio on uvloop "
        "with a bare Protocol per connection, in several processes of at most 5,000 "
        "connections, each bound to its own 127.x.y.z source address; at most 96 handshakes "
        "are in flight at once. It shares the 2 cores with the server: the CPU seconds of both "
        "sides are in the tables.",
        "- Ours: one login per run, its access token on every upgrade (`Authorization: "
        "Bearer`), then `{\"op\":\"subscribe\",\"channels\":[\"posts\"]}` and its ack. Long-polls: "
        "`GET /api/v1/poll?channels=posts&timeout=60`. The event: `POST /api/v1/posts` "
        "(one post). Peers: plain `/ws` and `/poll`, the event is `POST /broadcast`.",
        "- Memory per connection: (VmRSS of the server process(es) once all are held and "
        "its CPU is quiet) − (VmRSS before), ÷ connections held. Kernel socket memory is "
        "not in it.",
        "- Delivery: time.time() just before the trigger request is sent, to the time the last "
        "(and first) connection has received the whole event frame or poll answer; each client "
        "process notes its own first and last, on the same clock.",
        "- Garbage-collection pauses cannot be seen from outside the process, and the "
        "benchmark adds nothing to the server. What it reports instead: a probe process sends "
        "GET /health (peers: /hello) every 10 ms on one keep-alive connection during the "
        "whole run, and the longest answer in each phase is the longest stall of the server's "
        "event loop (a GC pass, or any long callback, such as a fan-out loop itself). Telling "
        "GC apart needs a `gc.callbacks` hook inside the server, which the server would have "
        "to provide.", "",
        "## Targets of issue #5", "",
        *(["Quick mode: the sizes are far below the targets, so these verdicts only show "
           "that every figure is produced.", ""] if mode.name != "full" else []),
        *targets_table(results), "",
        "## Targets of issue #14", "",
        *(["Quick mode: the sizes are far below the targets, so these verdicts only show "
           "that every figure is produced.", ""] if mode.name != "full" else []),
        *targets_14_table(results), "",
    ]
    if "ws" in results and "runs" in results["ws"]:
        out += section_hold(results["ws"], "WebSocket: idle connections, then one event",
                            "N WebSockets opened (ours: authenticated, then subscribed to "
                            "`posts`), held idle, then one event to all of them.")
    if "poll" in results and "runs" in results["poll"]:
        out += section_hold(results["poll"], "Long-poll: pending polls, then one event",
                            "N long-polls sent and left pending, then one event answers all "
                            "of them.")
    if "http" in results and "runs" in results["http"]:
        out += section_http(results["http"])
    if "workers" in results and "runs" in results["workers"]:
        out += section_workers(results["workers"])
    if "mixed" in results and "runs" in results["mixed"]:
        out += section_mixed(results["mixed"])
    if "writes" in results and "runs" in results["writes"]:
        out += section_writes(results["writes"])
    if "storm" in results and "runs" in results["storm"]:
        out += section_storm(results["storm"])
    if "rate" in results and "runs" in results["rate"]:
        out += section_rate(results["rate"])
    if "deflate" in results and "runs" in results["deflate"]:
        out += section_deflate(results["deflate"])
    if "autobahn" in results:
        from .autobahn import section as section_autobahn  # it imports cli, which imports us
        out += section_autobahn(results["autobahn"])
    out += ["## One million connections, on paper", "", *extrapolation(results), ""]
    out += ["## Errors and notes", "", *problems(results), "",
            f"The raw results of every run are in `{mode.results_dir.relative_to(ROOT)}/*.json` "
            "(not committed) after a run.", ""]
    path = report_path(mode)
    path.write_text("\n".join(out))
    return path
