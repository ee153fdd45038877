"""HTTP load through wrk (Debian's), its output parsed into requests/s and latency percentiles."""

import os
import re
import shutil
import subprocess

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * UNITS[unit]


def command(url: str, duration: str, threads: int = 2, connections: int = 64,
            script: str | None = None, timeout: str | None = None) -> list[str]:
    return ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}", "--latency",
            *(["-s", script] if script else []), *(["--timeout", timeout] if timeout else []),
            url]


def run(url: str, duration: str, threads: int = 2, connections: int = 64,
        script: str | None = None, timeout: str | None = None) -> dict:
    """wrk's figures; with a Lua `script` (wrk -s), its output is in the result as `out`.
    `timeout`: wrk's per-request timeout (its default, 2 s, leaves slower answers out of the
    latency figures and counts them as socket errors)."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk not found: apt-get install wrk")
    args = command(url, duration, threads, connections, script, timeout)
    load = os.getloadavg()[0]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300).stdout
    result = {"command": " ".join(args), "loadavg_start": load, **parse(out)}
    if script:
        result["out"] = out
    return result


def parse(out: str) -> dict:
    result = {}
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    result["rps"] = float(match.group(1)) if match else None
    for pct in ("50", "75", "90", "99"):
        match = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        result[f"p{pct}_ms"] = _ms(match.group(1)) if match else None
    match = re.search(r"(\d+) requests in ([\d.]+(?:us|ms|s|m))", out)
    result["requests"] = int(match.group(1)) if match else None
    result["seconds"] = _ms(match.group(2)) / 1000 if match else None
    match = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non_2xx"] = int(match.group(1)) if match else 0
    match = re.search(r"Socket errors: (.*)", out)
    result["socket_errors"] = match.group(1).strip() if match else None
    if result["rps"] is None:
        result["raw"] = out[-2000:]
    return result
