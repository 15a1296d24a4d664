"""The envelope codec and the schema's validation."""

from __future__ import annotations

import msgpack
import pytest

from bus.audio_format import BOT, MIC
from bus.envelope import MAX_PAYLOAD_BYTES, PROTOCOL_VERSION, decode, encode
from bus.errors import DecodeError, ValidationError
from bus.schema import MESSAGE_TYPES, Priority, decode_message, envelope_for
from bus.schema.audio import AudioFrame
from bus.schema.control import Stop
from bus.schema.system import Ready, Registration, RegistrySnapshot, Update
from bus.schema.tts import EndReason, TtsEnd, TtsFrame


def roundtrip(msg, **kw):
    env = envelope_for(msg, **kw)
    back = decode(encode(env))
    return env, back, decode_message(back)


def test_audio_payload_travels_as_its_own_raw_frame() -> None:
    pcm = bytes(range(256)) * 5  # 1280 bytes, 40 ms at 16 kHz
    env, back, msg = roundtrip(
        AudioFrame(sample_rate=MIC.sample_rate, sequence=7, stream_sample=4480, pcm=pcm),
        session="s1",
    )
    frames = encode(env)
    assert frames[1] == pcm  # the second frame is the PCM itself, not an encoding of it
    assert pcm not in frames[0]
    assert msg == AudioFrame(sample_rate=MIC.sample_rate, sequence=7, stream_sample=4480, pcm=pcm)
    assert (back.session, back.src, back.id, back.version) == ("s1", "", env.id, PROTOCOL_VERSION)
    assert back.mono_ns == env.mono_ns and back.wall_ns == env.wall_ns
    assert msg.duration_ms == 40.0


def test_nested_messages_and_enums_roundtrip() -> None:
    reg = Registration(
        actor_id="a",
        kind="loopback",
        host="h",
        pid=3,
        endpoints={"inbox": "tcp://127.0.0.1:1"},
        resident_models=("m1",),
    )
    assert roundtrip(Ready(registration=reg))[2] == Ready(registration=reg)
    snap = RegistrySnapshot(broker_epoch="e", version=4, actors=(reg, reg))
    assert roundtrip(snap)[2] == snap
    end = TtsEnd(utterance_id="u", reason=EndReason.BARGED_IN, frames=12)
    assert roundtrip(end)[2].reason is EndReason.BARGED_IN


def test_priority_puts_audio_behind_control() -> None:
    assert MESSAGE_TYPES["audio.frame"].PRIORITY is Priority.DATA
    assert MESSAGE_TYPES["tts.frame"].PRIORITY is Priority.DATA
    assert MESSAGE_TYPES["control.stop"].PRIORITY is Priority.CONTROL
    assert MESSAGE_TYPES["heartbeat"].PRIORITY is Priority.CONTROL


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([], "bad_frames"),
        ([b"\xc1\xc1\xc1"], "bad_msgpack"),
        ([msgpack.packb({"not": "an array"})], "bad_header"),
        ([msgpack.packb([99, "ping", "", "i", "s", 1, 1, "", {}])], "bad_version"),
        ([msgpack.packb([1, "", "", "i", "s", 1, 1, "", {}])], "bad_header"),
        ([msgpack.packb([1, "ping", "", "i", "s", "t", 1, "", {}])], "bad_header"),
        ([msgpack.packb([1, "ping", "x" * 500, "i", "s", 1, 1, "", {}])], "bad_header"),
        ([msgpack.packb([1, "ping", "", "i", "s", 1, 1, "", []])], "bad_header"),
        (
            [
                msgpack.packb([1, "ping", "", "i", "s", 1, 1, "", {}]),
                b"x" * (MAX_PAYLOAD_BYTES + 1),
            ],
            "oversized",
        ),
        ([b"a", b"b", b"c"], "bad_frames"),
    ],
)
def test_malformed_frames_raise_decode_error(frames: list[bytes], reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode(frames)
    assert info.value.reason == reason


REG = {"actor_id": "a", "kind": "k", "host": "h", "pid": 1}
"""A valid registration body."""
DEEP = [[[[["five lists deep"]]]]]
"""Deeper than a free-form value may nest."""
BAD = {**REG, "capabilities": {"ok": [1, 2.5, None, True, {"k": "v"}], "bad": [b"bytes"]}}
"""A registration whose free-form capabilities hold bytes."""


def _env(type_: str, body: dict, payload: bytes | None = None):
    return decode(
        [
            msgpack.packb([1, type_, "", "i", "s", 1, 1, "", body]),
            *([payload] if payload is not None else []),
        ]
    )


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        (_env("no.such.type", {}), "unknown_type"),
        (_env("control.stop", {"utterance_id": 5}), "bad_field"),
        (_env("control.stop", {"bogus": 1}), "bad_field"),
        (_env("control.stop", {"utterance_id": "u" * 200}), "too_long"),
        (_env("tts.end", {"utterance_id": "u", "reason": "exploded", "frames": 1}), "bad_field"),
        (_env("tts.end", {"utterance_id": "u", "reason": "completed"}), "bad_field"),
        (
            _env(
                "audio.frame", {"sample_rate": MIC.sample_rate, "sequence": 0, "stream_sample": 0}
            ),
            "bad_field",
        ),
        (
            _env(
                "audio.frame",
                {"sample_rate": MIC.sample_rate, "sequence": 0, "stream_sample": 0},
                b"abc",
            ),
            "bad_field",
        ),
        (
            _env("audio.frame", {"sample_rate": 3, "sequence": 0, "stream_sample": 0}, b"ab"),
            "bad_field",
        ),
        (_env("tts.frame", {"utterance_id": "u", "sequence": 0}, b"\0" * 100), "bad_field"),
        (_env("update", {"load": float("nan")}), "bad_field"),
        (_env("update", {"load": float("inf")}), "bad_field"),
        (_env("update", {"load": True}), "bad_field"),
        (_env("update", {"load": "0.5"}), "bad_field"),
        (_env("heartbeat", {"registry_version": True}), "bad_field"),  # no bool for an int
        (_env("heartbeat", {"registry_version": 1.0}), "bad_field"),  # nor a float
        (_env("heartbeat", {"registry_version": "1"}), "bad_field"),
        (_env("asr.transcript", {"text": "", "final": 1}), "bad_field"),  # no int for a bool
        (_env("ready", {"registration": "not a map"}), "bad_field"),
        (_env("ready", {"registration": {**REG, "bogus": 1}}), "bad_field"),
        (_env("ready", {"registration": {**REG, "kind": "k" * 65}}), "too_long"),
        (_env("ready", {"registration": {**REG, "capabilities": {"v": b"x"}}}), "bad_field"),
        (_env("ready", {"registration": {**REG, "capabilities": {"v": "x" * 16_385}}}), "too_long"),
        (_env("ready", {"registration": {**REG, "capabilities": {"v": DEEP}}}), "bad_field"),
        (_env("ready", {"registration": {**REG, "capabilities": {"v": {1: 2}}}}), "bad_field"),
        (
            _env("registry.snapshot", {"broker_epoch": "e", "version": 1, "actors": [BAD]}),
            "bad_field",
        ),
        (_env("tts.start", {"utterance_id": "u", "options": {"a": [[[[[[]]]]]]}}), "bad_field"),
    ],
)
def test_invalid_bodies_raise_validation_error(env, reason: str) -> None:
    with pytest.raises(ValidationError) as info:
        decode_message(env)
    assert info.value.reason == reason


def test_messages_are_frozen() -> None:
    stop = Stop(utterance_id="u")
    with pytest.raises(AttributeError):
        stop.utterance_id = "v"  # type: ignore[misc]
    assert TtsFrame(utterance_id="u", sequence=0, pcm=bytes(BOT.frame_bytes)).PAYLOAD == "pcm"


def test_free_form_values_nested_four_deep_are_accepted() -> None:
    caps = {"v": [[[["four lists deep", 1, 2.5, None, True]]]], "w": {"k": [{"k": "v"}]}}
    env = _env("ready", {"registration": {**REG, "capabilities": caps}})
    assert decode_message(env) == Ready(registration=Registration(**REG, capabilities=caps))


def test_an_int_is_accepted_for_a_float_field_and_becomes_a_float() -> None:
    msg = decode_message(_env("update", {"load": 1}))
    assert msg == Update(load=1.0) and type(msg.load) is float


def test_messages_are_built_by_keyword_only() -> None:
    with pytest.raises(TypeError):
        Stop("u")  # type: ignore[misc]
