"""The kernel's TCP counters and settings that decide whether a burst of connects is dropped.

TcpExtListenOverflows counts handshakes the kernel completed but could not queue for accept()
(the listen backlog was full): the client's final ACK is dropped and its handshake is retried
a second or more later. /proc/net/netstat is per network namespace, so anything else on the
machine that overflows a listen queue meanwhile is counted too.
"""

from pathlib import Path

COUNTERS = ("ListenOverflows", "ListenDrops", "SyncookiesSent", "SyncookiesRecv",
            "TCPReqQFullDoCookies", "TCPReqQFullDrop")
SETTINGS = {"net.core.somaxconn": "/proc/sys/net/core/somaxconn",
            "net.ipv4.tcp_max_syn_backlog": "/proc/sys/net/ipv4/tcp_max_syn_backlog",
            "net.ipv4.tcp_syncookies": "/proc/sys/net/ipv4/tcp_syncookies"}


def tcp_ext() -> dict:
    """The TcpExt counters of /proc/net/netstat named in COUNTERS."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], (int(v) for v in values.split()[1:])))
            return {name: table.get(name) for name in COUNTERS}
    return {}


def delta(before: dict, after: dict) -> dict:
    return {k: after[k] - before[k] for k in before
            if before.get(k) is not None and after.get(k) is not None}


def settings() -> dict:
    out = {}
    for name, path in SETTINGS.items():
        try:
            out[name] = int(Path(path).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            out[name] = None
    return out
