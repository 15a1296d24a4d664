"""The client-protocol parser takes anything a client can send and answers with a typed command
or a ClientError carrying a protocol code; it never raises anything else (issue: bad input is a
clean, coded error, never a dropped connection)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.tts.text import check_text, without_controls
from bus.audio_format import INPUT_RATES
from transports import protocol as p

CODES = {"INVALID_MESSAGE", "UNSUPPORTED_TYPE", "TEXT_TOO_LONG", "INVALID_TEXT"}
COMMANDS = (p.SessionConfigCommand, p.TextCommand, p.ControlCommand, p.EndCommand)

any_text = st.text(st.characters(exclude_categories=()), max_size=40)  # lone surrogates too
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
messages = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "control", "session_config", "end", "other"])},
    optional={
        "text": json_values,
        "command": st.sampled_from(["PAUSE", "RESUME", "STOP", "pause", ""]) | json_values,
        "voice": json_values,
        "audio_format": st.sampled_from(["binary", "json", "wav"]) | json_values,
        "input_sample_rate": st.sampled_from([*INPUT_RATES, 44100, True]) | json_values,
        "dialogue": st.sampled_from(["echo", "openai", "nope"]) | json_values,
        "echo_cancellation": st.booleans() | json_values,
        "extra": json_values,
    },
)


def parse(data: str) -> object:
    try:
        command = p.parse_text_message(data, max_text_chars=50)
    except p.ClientError as exc:
        assert exc.code in CODES
        return exc
    assert isinstance(command, COMMANDS)
    return command


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_a_command_or_a_coded_error(data: str) -> None:
    parse(data)


@settings(max_examples=400, deadline=None)
@given(messages)
def test_any_json_object_is_a_command_or_a_coded_error(message: dict[str, object]) -> None:
    result = parse(json.dumps(message))
    if isinstance(result, p.TextCommand):
        assert 0 < len(result.text) <= 50 and result.text.strip()
        result.text.encode("utf-8")  # whatever is accepted can be sent on the bus
        check_text(result.text)  # and a worker will not refuse it


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4096))
def test_any_binary_message_is_audio_or_a_coded_error(data: bytes) -> None:
    try:
        audio = p.parse_audio_message(data)
    except p.ClientError as exc:
        assert exc.code == "INVALID_MESSAGE"
        assert not data or len(data) % 2
    else:
        assert audio.pcm == data


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ('{"type": "text", "text": "\\ud800"}', "INVALID_MESSAGE"),  # a lone surrogate
        ("[" * 10_000 + "]" * 10_000, "INVALID_MESSAGE"),  # JSON nested 10,000 deep
        ('{"type": "text", "text": "' + "a" * 51 + '"}', "TEXT_TOO_LONG"),
        ('{"type": "dance"}', "UNSUPPORTED_TYPE"),
        ('{"type": "session_config", "input_sample_rate": true}', "INVALID_MESSAGE"),
        ('{"type": "session_config", "voice": "\\udfff"}', "INVALID_MESSAGE"),
        ('{"type": "session_config", "echo_cancellation": 1}', "INVALID_MESSAGE"),
        ('{"type": "session_config", "echo_cancellation": "on"}', "INVALID_MESSAGE"),
        ('"just a string"', "INVALID_MESSAGE"),
        ('{"type": "text", "text": "bell \\u0007 ringing"}', "INVALID_TEXT"),  # a control char
        ('{"type": "text", "text": "nul\\u0000"}', "INVALID_TEXT"),
        ('{"type": "text", "text": "c1 \\u0085 next line"}', "INVALID_TEXT"),
        ('{"type": "text", "text": "private \\ue000 use"}', "INVALID_TEXT"),
        ('{"type": "text", "text": "' + "[" * 5000 + '"}', "TEXT_TOO_LONG"),
        ("{" * 100_000, "INVALID_MESSAGE"),  # over 64 KiB
    ],
)
def test_named_bad_inputs_get_their_code(data: str, code: str) -> None:
    with pytest.raises(p.ClientError) as refused:
        p.parse_text_message(data, max_text_chars=50)
    assert refused.value.code == code


def test_tabs_and_newlines_are_speakable_and_other_controls_are_named() -> None:
    command = p.parse_text_message('{"type": "text", "text": "one\\ttwo\\r\\nthree"}', 50)
    assert command == p.TextCommand("one\ttwo\r\nthree")
    with pytest.raises(p.ClientError, match="U\\+001B at position 3"):
        p.parse_text_message('{"type": "text", "text": "abc\\u001b[0m"}', 50)
    assert without_controls("a\x00b\x1bc\td") == "a b c\td"


def test_a_valid_session_config_keeps_only_what_was_named() -> None:
    command = p.parse_text_message(
        '{"type": "session_config", "audio_format": "json", "input_sample_rate": 48000}', 50
    )
    assert command == p.SessionConfigCommand(
        audio_format=p.AudioFormat.JSON, input_sample_rate=48000
    )
    command = p.parse_text_message('{"type": "session_config", "echo_cancellation": false}', 50)
    assert command == p.SessionConfigCommand(echo_cancellation=False)
