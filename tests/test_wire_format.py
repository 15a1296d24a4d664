"""The bus wire format does not move: frames captured from the hand-written codec (bus/schema
at df489c0, before msgspec) decode and re-encode to the very same bytes.

``tests/data/wire_v1.json`` holds 264 envelopes, six of every message type (one with only the
required fields, five with every field drawn from boundary values: integers at each msgpack
width, floats down to subnormals, strings of 0/31/32/255/256 characters with non-ASCII ones,
nested registrations, free-form maps, ``None`` in optional fields), each as its header frame and
payload frame in hex. They were made by the old code's ``encode(Envelope(...to_wire()))`` and
checked to decode back to the message they came from. Types added since (the file's
``added_later``: ``gone``, ``asr.*`` requests, ``session.serve`` / ``drop``) have six samples of
their own, captured by the codec of the day when they came in; fields added since are absent
from the wire unless set (``msgspec.UNSET``), so the old frames still re-encode to themselves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bus.envelope import Envelope, decode, encode
from bus.schema import MESSAGE_TYPES, decode_message

GOLDEN = json.loads((Path(__file__).parent / "data" / "wire_v1.json").read_text())
SAMPLES: list[dict[str, Any]] = GOLDEN["samples"]


def test_the_captured_samples_cover_every_message_type() -> None:
    assert {s["type"] for s in SAMPLES} == set(MESSAGE_TYPES)


@pytest.mark.parametrize(
    "sample", SAMPLES, ids=[f"{s['type']}-{i % 6}" for i, s in enumerate(SAMPLES)]
)
def test_captured_frames_decode_and_reencode_to_the_same_bytes(sample: dict[str, Any]) -> None:
    frames = [bytes.fromhex(f) for f in sample["frames"]]
    env = decode(frames)
    msg = decode_message(env)
    assert type(msg) is MESSAGE_TYPES[sample["type"]]
    body, payload = msg.to_wire()
    again = Envelope(
        type=msg.TYPE,
        body=body,
        payload=payload,
        session=env.session,
        id=env.id,
        src=env.src,
        mono_ns=env.mono_ns,
        wall_ns=env.wall_ns,
        reply_to=env.reply_to,
    )
    assert encode(again) == frames
