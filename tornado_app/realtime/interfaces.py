"""What the realtime core needs of the process it runs in, declared here so that it never imports
the web layer: the WebSocket session (realtime.session) is handed a `RealtimeContext`, and the
web layer's AppContext (tornado_app/web/context.py) is one, structurally (no inheritance;
tests/unit/test_realtime_interfaces.py checks that it declares every name below, and that the
session reads no other)."""

from typing import Protocol

from ..accounts.security import TokenClaims
from .connections import Connections
from .grants import GrantCheck
from .hub import Hub


class RealtimeSettings(Protocol):
    """The settings a session reads (runtime.settings.Settings has them, from WS_* variables)."""

    ws_max_message_bytes: int  # the largest message a client may send
    ws_max_pending_bytes: int  # unsent output past which a consumer is too slow and dropped
    ws_max_messages_per_second: float  # a client's message rate (bursts of twice that)
    ws_max_subscriptions: int  # channels per connection


class Authenticator(Protocol):
    """Checks an access token (accounts.auth.AuthService): for the `auth` op of a session."""

    async def authenticate_claims(self, access_token: str) -> tuple[dict, TokenClaims]:
        """The token's user and claims; raises ApiError 401 when the token is not good."""


class RealtimeContext(Protocol):
    """This process's services, as far as a realtime session uses them."""

    settings: RealtimeSettings
    hub: Hub  # delivers events to subscriptions
    connections: Connections  # the open connections, for shutdown, keep-alives and metrics
    grants: GrantCheck  # ends the rights of connections whose token or role changed
    auth: Authenticator
