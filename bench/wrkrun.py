"""HTTP load through wrk (Debian's), its output parsed into requests/s and latency percentiles."""

import os
import re
import shutil
import subprocess

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * UNITS[unit]


def command(url: str, duration: str, threads: int = 2, connections: int = 64) -> list[str]:
    return ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}", "--latency", url]


def run(url: str, duration: str, threads: int = 2, connections: int = 64) -> dict:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk not found: apt-get install wrk")
    args = command(url, duration, threads, connections)
    load = os.getloadavg()[0]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300).stdout
    result = {"command": " ".join(args), "loadavg_start": load}
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    result["rps"] = float(match.group(1)) if match else None
    for pct in ("50", "75", "90", "99"):
        match = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        result[f"p{pct}_ms"] = _ms(match.group(1)) if match else None
    match = re.search(r"(\d+) requests in", out)
    result["requests"] = int(match.group(1)) if match else None
    match = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non_2xx"] = int(match.group(1)) if match else 0
    match = re.search(r"Socket errors: (.*)", out)
    result["socket_errors"] = match.group(1).strip() if match else None
    if result["rps"] is None:
        result["raw"] = out[-2000:]
    return result
