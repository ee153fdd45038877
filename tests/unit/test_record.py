"""An event as delivered (tornado_app/realtime/record.py): serialized once, whatever the number of
subscribers, as a WebSocket frame and as an SSE message."""

import json

from tests.unit.frames import parse_server_frames
from tornado_app.realtime.record import Record
from tornado_app.realtime.websocket import OP_TEXT

EVENT = {"seq": 7, "channel": "posts", "type": "post.created",
         "data": {"id": "p1", "title": "Grüße"}, "created_at": "2026-01-01T00:00:00Z"}


def test_the_frame_is_one_text_frame_of_the_event_message():
    [frame] = parse_server_frames(Record(EVENT).frame)
    assert (frame.fin, frame.opcode) == (True, OP_TEXT)
    assert json.loads(frame.payload.decode("utf-8")) == {"type": "event", "event": EVENT}


def test_text_is_sent_as_utf8_not_escaped():
    assert "Grüße".encode() in Record(EVENT).json


def test_the_sse_message_carries_the_seq_as_its_id_and_the_type_as_its_event():
    lines = Record(EVENT).sse.decode("utf-8").split("\n")
    assert lines[:2] == ["id: 7", "event: post.created"]
    assert json.loads(lines[2].removeprefix("data: ")) == EVENT
    assert lines[3:] == ["", ""]


def test_each_form_is_built_once_and_shared():
    record = Record(EVENT)
    assert record.frame is record.frame
    assert record.sse is record.sse
    assert record.json is record.json
