"""The AsyncAPI 3 document of the realtime protocol, generated from the models in
tornado_app/schemas/realtime.py (the WebSocket ops and frames, the SSE messages, the long-poll
answer and every event type). Nothing here describes a field by hand."""

from pydantic.json_schema import models_json_schema

from .. import __version__
from ..schemas.notifications import PollResponse
from ..schemas.realtime import (CHANNELS, AuthenticatedFrame, AuthOp, ErrorFrame, EventFrame, PingOp,
                                PongFrame, SseEpoch, SseError, SubscribedFrame, SubscribeOp,
                                UnsubscribedFrame, UnsubscribeOp, event_type)

CLIENT_OPS = {"subscribe": SubscribeOp, "unsubscribe": UnsubscribeOp, "ping": PingOp,
              "auth": AuthOp}
SERVER_FRAMES = {"subscribed": SubscribedFrame, "unsubscribed": UnsubscribedFrame,
                 "event": EventFrame, "pong": PongFrame, "authenticated": AuthenticatedFrame,
                 "error": ErrorFrame}
SSE_MESSAGES = {"epoch": SseEpoch, "error": SseError}
REPLIES = {"subscribe": ["subscribed", "error"], "unsubscribe": ["unsubscribed", "error"],
           "ping": ["pong"], "auth": ["authenticated", "error"]}


def _asyncapi_schema(node):
    """Pydantic writes OpenAPI's discriminator object; the AsyncAPI schema's is the property name."""
    if isinstance(node, dict):
        out = {key: _asyncapi_schema(value) for key, value in node.items()}
        if isinstance(out.get("discriminator"), dict):
            out["discriminator"] = out["discriminator"]["propertyName"]
        return out
    if isinstance(node, list):
        return [_asyncapi_schema(item) for item in node]
    return node


def _doc(model) -> str:
    return " ".join((model.__doc__ or "").split())


def build_asyncapi() -> dict:
    events = {event_type(model): model for _, models in CHANNELS.values() for model in models}
    models = [*CLIENT_OPS.values(), *SERVER_FRAMES.values(), *SSE_MESSAGES.values(),
              *events.values(), PollResponse]
    refs, top = models_json_schema([(model, "serialization") for model in models],
                                   ref_template="#/components/schemas/{model}")
    schemas = _asyncapi_schema(top.get("$defs", {}))

    def message(name, model, **extra):
        entry = {"name": name, "contentType": "application/json",
                 "payload": refs[(model, "serialization")]}
        if _doc(model):
            entry["summary"] = _doc(model)
        return {**entry, **extra}

    messages = {}
    for name, model in CLIENT_OPS.items():
        messages[f"op.{name}"] = message(name, model, title=f"{name} op (client → server)")
    for name, model in SERVER_FRAMES.items():
        messages[f"frame.{name}"] = message(name, model, title=f"{name} frame (server → client)")
    for name, model in SSE_MESSAGES.items():
        messages[f"sse.{name}"] = message(name, model, title=f"SSE `event: {name}`")
    for name, model in events.items():
        messages[name] = message(name, model, title=f"{name} event")
    messages["poll.answer"] = message("poll.answer", PollResponse, title="Long-poll answer")

    def refs_to(*names):
        return {name: {"$ref": f"#/components/messages/{name}"} for name in names}

    channels = {
        "websocket": {
            "address": "/api/v1/ws",
            "title": "WebSocket",
            "description": "JSON text frames. Authenticate with `Authorization: Bearer` on the "
                           "upgrade, the `access_token` query parameter, or an `auth` op. "
                           "Upgrades from an Origin outside ALLOWED_ORIGINS are refused (403).",
            "servers": [{"$ref": "#/servers/websocket"}],
            "messages": refs_to(*[f"op.{n}" for n in CLIENT_OPS],
                                *[f"frame.{n}" for n in SERVER_FRAMES]),
        },
        "stream": {
            "address": "/api/v1/stream",
            "title": "Server-Sent Events",
            "description": "GET with `channels=a,b`, and `since=<seq>` (or the `Last-Event-ID` "
                           "header) and `epoch` to resume. Each event is a named SSE message: "
                           "`id: <seq>`, `event: <type>` (such as post.created), `data: <event "
                           "JSON>`, so a browser EventSource needs addEventListener(type) per "
                           "event type: `onmessage` only sees unnamed messages.",
            "servers": [{"$ref": "#/servers/http"}],
            "messages": refs_to(*[f"sse.{n}" for n in SSE_MESSAGES], *events),
        },
        "poll": {
            "address": "/api/v1/poll",
            "title": "Long-poll",
            "description": "GET with `channels=a,b`, `since=<seq>`, `timeout=<s>` (0..60, "
                           "default 30) and `epoch`; at most 100 events per answer.",
            "servers": [{"$ref": "#/servers/http"}],
            "messages": refs_to("poll.answer"),
        },
    }
    operations = {}
    for name in CLIENT_OPS:
        operations[f"send_{name}"] = {
            "action": "send", "channel": {"$ref": "#/channels/websocket"},
            "summary": f"WebSocket `{name}` op",
            "messages": [{"$ref": f"#/channels/websocket/messages/op.{name}"}],
            "reply": {"channel": {"$ref": "#/channels/websocket"},
                      "messages": [{"$ref": f"#/channels/websocket/messages/frame.{reply}"}
                                   for reply in REPLIES[name]]},
        }
    operations["receive_frames"] = {
        "action": "receive", "channel": {"$ref": "#/channels/websocket"},
        "summary": "Every frame the server sends on a WebSocket",
        "messages": [{"$ref": f"#/channels/websocket/messages/frame.{name}"}
                     for name in SERVER_FRAMES]}
    operations["receive_stream"] = {
        "action": "receive", "channel": {"$ref": "#/channels/stream"},
        "summary": "The messages of an SSE stream",
        "messages": [{"$ref": f"#/channels/stream/messages/{name}"}
                     for name in [*(f"sse.{n}" for n in SSE_MESSAGES), *events]]}
    operations["receive_poll"] = {
        "action": "receive", "channel": {"$ref": "#/channels/poll"},
        "summary": "A long-poll answer",
        "messages": [{"$ref": "#/channels/poll/messages/poll.answer"}]}

    for address, (description, models) in CHANNELS.items():
        key = address.split(":")[0] if ":" in address else address
        key = {"post": "post_comments", "user": "user_notifications"}.get(key, key)
        channel = {"address": address, "description": description,
                   "messages": refs_to(*(event_type(m) for m in models))}
        if "{" in address:
            name = address[address.index("{") + 1:-1]
            channel["parameters"] = {name: {"description": "A 24-character hex id"}}
        channels[key] = channel
        operations[f"receive_{key}"] = {
            "action": "receive", "channel": {"$ref": f"#/channels/{key}"},
            "summary": f"The events of `{address}`, on any transport",
            "messages": [{"$ref": f"#/channels/{key}/messages/{event_type(m)}"} for m in models]}

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "tornado-app realtime API",
            "version": __version__,
            "description": "Every change is stored as an event with a deployment-wide `seq` and "
                           "delivered over WebSocket, Server-Sent Events or long-poll, with one "
                           "cursor model: resume with `since` (and `epoch`) and miss nothing "
                           "still retained; a cursor that cannot be honoured is `cursor_expired`. "
                           "The HTTP API is in /openapi.json.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "websocket": {"host": "127.0.0.1:8888", "protocol": "ws",
                          "description": "This server: WebSocket (`/asyncapi.json` answers "
                                         "with the host it was fetched from)"},
            "http": {"host": "127.0.0.1:8888", "protocol": "http",
                     "description": "This server: SSE and long-poll"},
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }
