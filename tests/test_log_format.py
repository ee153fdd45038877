"""LOG_FORMAT: JSON lines by default, console lines for a person (coloured only on a terminal or
with FORCE_COLOR, never with NO_COLOR); `auto` is console under `serve --dev` only."""

import io
import json
import logging

import pytest

from tornado_app.cli import log_format
from tornado_app.runtime.logs import ConsoleFormatter, JsonFormatter, use_color


def _record(**extra):
    record = logging.LogRecord("tornado_app.access", logging.INFO, __file__, 1, "%s %s %s",
                               ("GET", "/api/v1/posts", 200), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_a_console_line_carries_the_message_and_the_extra_fields():
    line = ConsoleFormatter(color=False).format(
        _record(request_id="abc", method="GET", path="/api/v1/posts", status=200,
                duration_ms=1.5, user_id=None))
    assert " INFO    tornado_app.access  GET /api/v1/posts 200  " in line
    assert line.endswith("request_id=abc duration_ms=1.5")
    assert "\033[" not in line


def test_a_coloured_console_line_colours_the_level():
    line = ConsoleFormatter(color=True).format(_record())
    assert "\033[32mINFO   \033[0m" in line


def test_json_stays_one_object_per_line():
    entry = json.loads(JsonFormatter().format(_record(request_id="abc")))
    assert entry["message"] == "GET /api/v1/posts 200" and entry["request_id"] == "abc"


class _Tty(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("stream, env, expected", [
    (io.StringIO(), {}, False),
    (_Tty(), {}, True),
    (io.StringIO(), {"FORCE_COLOR": "1"}, True),
    (_Tty(), {"NO_COLOR": "1"}, False),
])
def test_colour_only_on_a_terminal_or_when_forced(monkeypatch, stream, env, expected):
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert use_color(stream) is expected


@pytest.mark.parametrize("setting, serving_dev, expected", [
    ("auto", False, "json"), ("auto", True, "console"),
    ("json", True, "json"), ("console", False, "console"),
])
def test_auto_is_console_only_when_serving_in_development(setting, serving_dev, expected):
    assert log_format(setting, serving_dev) == expected
