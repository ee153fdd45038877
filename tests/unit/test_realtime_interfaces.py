"""The realtime core's declared context (tornado_app/realtime/interfaces.py): the web layer's
AppContext has everything it declares, and the WebSocket session reads nothing else of it.

Nothing type-checks these at runtime; the names are compared (and the session's reads are found
with `ast`), so a new `self.ctx.<name>` in the session, or a renamed field of AppContext, fails
here rather than on the first connection."""

import ast
import inspect
import typing
from pathlib import Path

from tornado_app.accounts.auth import AuthService
from tornado_app.realtime import session
from tornado_app.realtime.interfaces import Authenticator, RealtimeContext, RealtimeSettings
from tornado_app.runtime.settings import Settings
from tornado_app.web.context import AppContext


def declared(protocol) -> dict:
    return typing.get_type_hints(protocol)


def test_app_context_has_every_field_the_realtime_context_declares_with_its_type():
    fields = typing.get_type_hints(AppContext)
    for name, kind in declared(RealtimeContext).items():
        assert name in fields, name
        if name in ("settings", "auth"):
            continue  # protocols themselves: checked below
        # `GrantCheck | None` on AppContext (set once built) is a GrantCheck for a session.
        assert kind in (fields[name], *typing.get_args(fields[name])), name
    assert fields["settings"] is Settings
    assert fields["auth"] is AuthService


def test_the_settings_have_every_setting_the_realtime_core_reads():
    fields = Settings.model_fields
    for name, kind in declared(RealtimeSettings).items():
        assert name in fields, name
        assert fields[name].annotation is kind, name


def test_the_auth_service_authenticates_as_the_realtime_core_calls_it():
    wanted = inspect.signature(Authenticator.authenticate_claims)
    method = AuthService.authenticate_claims
    assert inspect.iscoroutinefunction(method)
    assert list(inspect.signature(method).parameters) == list(wanted.parameters)


def reads(tree: ast.AST) -> tuple[set[str], set[str]]:
    """The attributes the session reads of its context (`ctx.x`, `self.ctx.x`) and of the
    context's settings (`ctx.settings.x`, `self.ctx.settings.x`, or `settings.x` once assigned)."""
    def is_ctx(node) -> bool:
        return (isinstance(node, ast.Name) and node.id == "ctx") or (
            isinstance(node, ast.Attribute) and node.attr == "ctx"
            and isinstance(node.value, ast.Name) and node.value.id == "self")

    def is_settings(node) -> bool:
        return (isinstance(node, ast.Name) and node.id == "settings") or (
            isinstance(node, ast.Attribute) and node.attr == "settings" and is_ctx(node.value))

    of_ctx, of_settings = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            if is_ctx(node.value):
                of_ctx.add(node.attr)
            elif is_settings(node.value):
                of_settings.add(node.attr)
    return of_ctx, of_settings


def test_the_reader_finds_reads_of_the_context_and_its_settings():
    tree = ast.parse("settings = ctx.settings\nself.ctx.hub.x\nsettings.a\nself.ctx.settings.b\n"
                     "other.c\n")
    assert reads(tree) == ({"settings", "hub"}, {"a", "b"})


def test_the_session_reads_only_what_the_realtime_context_declares():
    of_ctx, of_settings = reads(ast.parse(Path(session.__file__).read_text()))
    assert of_ctx == set(declared(RealtimeContext))
    assert of_settings == set(declared(RealtimeSettings))
