"""Stream position: where in the event log a GET answer stands.

Every GET of a resource that has events carries `Event-Seq` (and `Event-Epoch`). The seq is the
hub's position taken before the read: each event at or below it reports a change stored before
the read began, so it is reflected in the answer, and subscribing with `since=<Event-Seq>`
delivers every change the answer does not reflect (some it reflects may come again; versioned
resources carry `version` so clients skip those).
"""

# Route names (prefixes) whose GET answers carry the position: the resources with events.
POSITIONED_ROUTES = ("posts.", "comments.", "products.", "notifications.")

HEADERS = {
    "Event-Seq": {"description": "Subscribe with since=<this> to receive every change this "
                                 "answer does not reflect yet", "schema": {"type": "integer"}},
    "Event-Epoch": {"description": "The event log's epoch, to send back with the cursor",
                    "schema": {"type": "string"}},
}


def is_positioned(route_name: str) -> bool:
    return route_name.startswith(POSITIONED_ROUTES)
