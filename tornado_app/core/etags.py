"""ETags are the resource version in quotes; If-Match and If-None-Match compare against it."""

from .wire import parse_decimal

ANY = "*"


def etag(version: int) -> str:
    return f'"{version}"'


def parse_etag_list(header: str | None, weak: bool = True):
    """None when absent; ANY for `*`; else the set of versions named.

    If-None-Match compares weakly (W/"3" matches version 3); If-Match strongly (RFC 9110 §13.1.1),
    so a weak tag there matches nothing."""
    if header is None:
        return None
    header = header.strip()
    if header == ANY:
        return ANY
    versions = set()
    for part in header.split(","):
        part = part.strip()
        if part.startswith("W/"):
            if not weak:
                continue
            part = part[2:]
        if len(part) >= 2 and part[0] == part[-1] == '"':
            # A tag that is not a version we could have issued matches nothing.
            version = parse_decimal(part[1:-1])
            if version is not None:
                versions.add(version)
    return versions


def matches(versions, version: int) -> bool:
    return versions == ANY or (versions is not None and version in versions)
