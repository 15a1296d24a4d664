"""The client WebSocket protocol (DESIGN.md): parsing and validating what clients send.

Every refusal is a :class:`ClientError` with the protocol's code; the session stays usable.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import WSMsgType

from adapters.dialogue import NAMES as DIALOGUES

MAX_TEXT_MESSAGE_BYTES = 64 * 1024
"""Largest JSON message accepted."""
MAX_AUDIO_MESSAGE_BYTES = 1024 * 1024
"""Largest binary (microphone audio) message accepted."""
AUDIO_FORMATS = ("binary", "json")
INPUT_RATES = (16_000, 48_000)
CONTROL_COMMANDS = ("PAUSE", "RESUME", "STOP")


class ClientError(ValueError):
    """A client message refused, with the protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_client_message(frame: Any, max_text_chars: int) -> dict[str, Any]:
    """A validated command ``{"type": ...}`` from one WebSocket message, or ClientError."""
    if frame.type == WSMsgType.BINARY:
        data = frame.data
        if not data or len(data) % 2:
            raise ClientError(
                "INVALID_MESSAGE", "audio must be PCM s16le: an even, non-zero number of bytes"
            )
        if len(data) > MAX_AUDIO_MESSAGE_BYTES:
            raise ClientError(
                "INVALID_MESSAGE", f"audio messages hold at most {MAX_AUDIO_MESSAGE_BYTES} bytes"
            )
        return {"type": "audio_in", "pcm": bytes(data)}
    if frame.type != WSMsgType.TEXT:
        raise ClientError("INVALID_MESSAGE", f"unexpected WebSocket message {frame.type!r}")
    if len(frame.data) > MAX_TEXT_MESSAGE_BYTES:
        raise ClientError(
            "INVALID_MESSAGE", f"text messages hold at most {MAX_TEXT_MESSAGE_BYTES} bytes"
        )
    try:
        message = json.loads(frame.data)
    except ValueError:
        raise ClientError("INVALID_MESSAGE", "not valid JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ClientError("INVALID_MESSAGE", 'expected a JSON object with a string "type"')
    kind = message["type"]
    if kind == "text":
        text = message.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ClientError("INVALID_MESSAGE", '"text" must be a non-empty string')
        if len(text) > max_text_chars:
            raise ClientError("TEXT_TOO_LONG", f"text holds at most {max_text_chars} characters")
        return {"type": "text", "text": text}
    if kind == "control":
        command = message.get("command")
        if command not in CONTROL_COMMANDS:
            raise ClientError("INVALID_MESSAGE", f'"command" must be one of {CONTROL_COMMANDS}')
        return {"type": "control", "command": command}
    if kind == "session_config":
        return _session_config(message)
    if kind == "end":
        return {"type": "end"}
    raise ClientError("UNSUPPORTED_TYPE", f"unknown message type {kind[:64]!r}")


def _session_config(message: dict[str, Any]) -> dict[str, Any]:
    known = {"type", "voice", "audio_format", "input_sample_rate", "dialogue"}
    unknown = set(message) - known
    if unknown:
        raise ClientError("INVALID_MESSAGE", f"unknown session_config fields {sorted(unknown)}")
    voice = message.get("voice")
    if voice is not None and (not isinstance(voice, str) or len(voice) > 128):
        raise ClientError("INVALID_MESSAGE", '"voice" must be a voice id (duplex voices)')
    if message.get("audio_format", "binary") not in AUDIO_FORMATS:
        raise ClientError("INVALID_MESSAGE", f'"audio_format" must be one of {AUDIO_FORMATS}')
    if message.get("input_sample_rate", 16_000) not in INPUT_RATES:
        raise ClientError("INVALID_MESSAGE", f'"input_sample_rate" must be one of {INPUT_RATES}')
    dialogue = message.get("dialogue")
    if dialogue is not None and dialogue not in DIALOGUES:
        raise ClientError("INVALID_MESSAGE", f'"dialogue" must be one of {DIALOGUES}')
    return dict(message)
