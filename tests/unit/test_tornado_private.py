"""The check of Tornado's private names (tornado_app/web/tornado_private.py), without a server."""

import os

import pytest
import tornado
from tornado.speedups import websocket_mask

from tornado_app.realtime.websocket import unmask_python
from tornado_app.web import tornado_private
from tornado_app.web.tornado_private import Need, TornadoMismatch, check, problems


class FakeStream:
    """A Tornado class as a later release might have it: some names gone or changed."""

    def __init__(self):
        self._read_buffer = bytearray()
        self.read_buffer_size = 0  # renamed: no longer private

    def _break_cycles(self):
        pass

    def clear(self):
        self._headers = {}
        self._status_code = 200

    _HTTPRequestContext = "not a class any more"


def test_the_installed_tornado_has_every_name_the_server_uses():
    assert problems() == []


def test_a_missing_method_is_named():
    assert problems([Need(FakeStream, "_flush_cycles", "method")]) == \
        ["FakeStream._flush_cycles is missing"]


def test_an_instance_attribute_its_setter_no_longer_assigns_is_named():
    assert problems([Need(FakeStream, "_read_buffer_size", "attribute")]) == \
        ["FakeStream._read_buffer_size: no longer set by FakeStream.__init__"]


def test_an_attribute_whose_setter_is_gone_is_named():
    assert problems([Need(FakeStream, "_connections", "attribute", set_in="initialize")]) == \
        ["FakeStream.initialize (which sets _connections) is missing"]


def test_a_name_of_another_kind_is_named():
    assert problems([Need(FakeStream, "_HTTPRequestContext", "class")]) == \
        ["FakeStream._HTTPRequestContext is not a class"]


def test_a_replaced_method_that_now_sets_other_attributes_is_named():
    need = Need(FakeStream, "clear", "method",
                assigns=frozenset({"_headers", "_status_code", "_reason"}))
    assert problems([need]) == ["FakeStream.clear now sets ['_headers', '_status_code'], "
                                "not ['_headers', '_reason', '_status_code']"]


def test_names_that_are_there_pass():
    assert problems([Need(FakeStream, "_read_buffer", "attribute"),
                     Need(FakeStream, "_break_cycles", "method")]) == []


def test_the_failure_names_the_tornado_version_the_tested_one_and_each_missing_name():
    with pytest.raises(TornadoMismatch) as raised:
        check([Need(FakeStream, "_flush_cycles", "method"),
               Need(FakeStream, "_state", "attribute")], version="9.1.0")
    message = str(raised.value)
    assert "Tornado 9.1.0" in message
    assert f"tested on Tornado {tornado_private.TESTED_ON}.x" in message
    assert "FakeStream._flush_cycles is missing" in message
    assert "FakeStream._state: no longer set by FakeStream.__init__" in message


def test_the_installed_tornado_is_the_tested_minor_version():
    # setup.cfg pins tornado to TESTED_ON; a venv outside the pin fails here before anywhere else.
    assert tornado.version.split(".")[:2] == tornado_private.TESTED_ON.split(".")


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 125, 126, 65536 + 3])
def test_unmasking_without_tornados_c_helper_gives_what_it_gives(size):
    mask, data = os.urandom(4), os.urandom(size)
    assert unmask_python(mask, data) == websocket_mask(mask, data)
