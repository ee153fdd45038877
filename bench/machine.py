"""The machine and the versions a report names."""

import os
import platform
import re
import resource
import subprocess
from importlib import metadata

from tornado_app.runtime.embedded import find_ferretdb


def _first_line(args: list[str]) -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "not found"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _meminfo_gib() -> str:
    with open("/proc/meminfo") as f:
        kb = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
    return f"{kb / 1024 / 1024:.1f} GiB"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            match = re.search(r"model name\s*:\s*(.*)", f.read())
        return match.group(1).strip() if match else platform.processor()
    except OSError:
        return "unknown"


def facts() -> dict:
    try:
        ferretdb = _first_line([find_ferretdb(), "--version"])
    except Exception:
        ferretdb = "not found"
    return {
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory": _meminfo_gib(),
        "kernel": platform.release(),
        "open files limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "local port range": open("/proc/sys/net/ipv4/ip_local_port_range").read().split(),
        "Python": platform.python_version(),
        "Tornado": _version("tornado"),
        "uvicorn": _version("uvicorn"),
        "FastAPI": _version("fastapi"),
        "uvloop": _version("uvloop"),
        "httptools": _version("httptools"),
        "websockets": _version("websockets"),
        "pymongo": _version("pymongo"),
        "redis (Python)": _version("redis"),
        "FerretDB": ferretdb,
        "redis-server": _first_line(["redis-server", "--version"]),
        "wrk": _first_line(["wrk", "-v"]),
    }
