"""The layers of the code, checked on its import graph (read with `ast`; nothing is run).

From the bottom up; a module may import from its own layer and the layers below it:

1. tornado_app.core: time, errors, ids, wire numbers, ETags, JSON bodies. No Tornado.
2. tornado_app.storage: the database, the outbox, versioned updates, pages, idempotency.
3. The domain: tornado_app.accounts, .blog, .catalog, .notifications; tornado_app.schemas (the
   request and response models).
4. The realtime core, tornado_app.realtime (but not its transports): the event log, hub,
   subscriptions, fan-out, grants, the WebSocket frame protocol and session. No Tornado web
   layer: it delivers to whatever implements its declared interfaces.
5. The web layer: tornado_app.web (the application factory, the route table, the API documents,
   the HTTP server), handlers/, and tornado_app.realtime.transports (WebSocket, SSE, long-poll:
   each owns its connection, on top of the realtime core).
6. tornado_app.runtime: the process (settings, logs, metrics, the event loop, the embedded
   FerretDB, server, workers). Its settings, logs and metrics are read by the web layer too.
7. The entry points: tornado_app.cli (the `tornado-app` command) and tornado_app.__main__
   (`python -m tornado_app`); run.py at the top of the repository calls the same CLI.

Layers 1 to 4 never import Tornado's web or websocket modules, handlers/, tornado_app.web or
tornado_app.runtime, and nothing below the web layer imports the transports. The graph as a whole
has no cycle: every module can be loaded on its own without another half-loaded.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tornado_app", "handlers")

BELOW_WEB = ("tornado_app.core", "tornado_app.storage", "tornado_app.accounts", "tornado_app.blog",
             "tornado_app.catalog", "tornado_app.notifications", "tornado_app.schemas",
             "tornado_app.realtime")
TRANSPORTS = "tornado_app.realtime.transports"
WEB_ONLY = ("tornado.web", "tornado.websocket", "handlers", "tornado_app.web", "tornado_app.runtime")


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def module_files() -> dict[str, Path]:
    files = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join(parts)] = path
    return files


def imports_of(name: str, path: Path) -> set[str]:
    """Every module `name` imports, anywhere in it (in functions too), by absolute name: for
    `from a import b`, both a and a.b (b may be a module)."""
    is_package = path.name == "__init__.py"
    package = name.split(".") if is_package else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    """Our modules → the modules of ours they import."""
    files = module_files()
    return {name: {other for other in imports_of(name, path) if other in files and other != name}
            for name, path in files.items()}


def external_imports() -> dict[str, set[str]]:
    return {name: imports_of(name, path) for name, path in module_files().items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_graph_reads_every_module_and_their_imports():
    graph = import_graph()
    assert {"tornado_app.web.routes", "tornado_app.realtime.hub", "handlers.base",
            "tornado_app.realtime.transports.longpoll"} <= set(graph)
    assert "tornado_app.realtime.hub" in graph["tornado_app.web.context"]
    assert "handlers.docs" in graph["tornado_app.web.routes"]


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_imports_have_no_cycle():
    assert find_cycle(import_graph()) is None


def test_nothing_below_the_web_layer_imports_tornado_web_handlers_web_or_runtime():
    wrong = {name: sorted(other for other in imported
                          if any(within(other, prefix) for prefix in WEB_ONLY))
             for name, imported in external_imports().items()
             if any(within(name, layer) for layer in BELOW_WEB) and not within(name, TRANSPORTS)}
    assert {name: found for name, found in wrong.items() if found} == {}


def test_only_the_web_layer_imports_the_transports():
    wrong = {name: sorted(other for other in imported if within(other, TRANSPORTS))
             for name, imported in import_graph().items()
             if any(within(name, layer) for layer in BELOW_WEB) and not within(name, TRANSPORTS)}
    assert {name: found for name, found in wrong.items() if found} == {}


def rank(module: str) -> int:
    """The layer of one of our modules, as numbered in this module's docstring."""
    if within(module, TRANSPORTS) or within(module, "tornado_app.web") or within(module, "handlers"):
        return 5
    for number, layers in ((1, ("tornado_app.core",)), (2, ("tornado_app.storage",)),
                           (3, ("tornado_app.accounts", "tornado_app.blog", "tornado_app.catalog",
                                "tornado_app.notifications", "tornado_app.schemas")),
                           (4, ("tornado_app.realtime",)), (6, ("tornado_app.runtime",)),
                           (7, ("tornado_app.cli", "tornado_app.__main__"))):
        if any(within(module, layer) for layer in layers):
            return number
    return 0  # the package itself (tornado_app/__init__.py: the version)


def test_the_lower_layers_import_only_from_their_own_layer_or_below():
    wrong = {name: sorted(other for other in imported if rank(other) > rank(name))
             for name, imported in import_graph().items() if rank(name) <= 4}
    assert {name: found for name, found in wrong.items() if found} == {}


def test_every_module_has_a_layer():
    assert [name for name in import_graph() if rank(name) == 0] == ["tornado_app"]
