"""ETags are the resource version in quotes; If-Match and If-None-Match compare against it."""

ANY = "*"


def etag(version: int) -> str:
    return f'"{version}"'


def parse_etag_list(header: str | None):
    """None when absent; ANY for `*`; else the set of versions named (weak or strong)."""
    if header is None:
        return None
    header = header.strip()
    if header == ANY:
        return ANY
    versions = set()
    for part in header.split(","):
        part = part.strip()
        if part.startswith("W/"):
            part = part[2:]
        if len(part) >= 2 and part[0] == part[-1] == '"' and part[1:-1].isdigit():
            versions.add(int(part[1:-1]))
    return versions


def matches(versions, version: int) -> bool:
    return versions == ANY or (versions is not None and version in versions)
