"""The one schema package every actor imports: one module per domain, one codec.

``decode_message(env)`` turns an envelope into its typed message (or raises ValidationError);
``envelope_for(msg, ...)`` wraps a message for sending.
"""

from __future__ import annotations

from bus.envelope import Envelope
from bus.errors import ValidationError
from bus.schema import asr, audio, control, routing, session, system, tts, vad
from bus.schema._base import MESSAGE_TYPES, Message, Priority, bounded, message

__all__ = [
    "MESSAGE_TYPES",
    "Message",
    "Priority",
    "asr",
    "audio",
    "bounded",
    "control",
    "decode_message",
    "envelope_for",
    "message",
    "routing",
    "session",
    "system",
    "tts",
    "vad",
]


def decode_message(env: Envelope) -> Message:
    """The typed message inside ``env``; raises ValidationError for unknown types or bad bodies."""
    cls = MESSAGE_TYPES.get(env.type)
    if cls is None:
        raise ValidationError("unknown_type", f"unknown message type {env.type!r}")
    return cls.from_wire(env.body, env.payload)


def envelope_for(msg: Message, *, src: str = "", session: str = "", reply_to: str = "") -> Envelope:
    """Wrap ``msg`` in a fresh envelope stamped now."""
    body, payload = msg.to_wire()
    return Envelope(
        type=msg.TYPE, body=body, payload=payload, session=session, src=src, reply_to=reply_to
    )
