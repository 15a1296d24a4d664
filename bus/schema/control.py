"""Control messages: playout and synthesis control, barge-in. Never queued behind audio."""

from __future__ import annotations

from typing import ClassVar

from bus.schema._base import Message, bounded, message


@message
class Pause(Message):
    """Pause playout / synthesis of the session's current utterance, keeping its place."""

    TYPE: ClassVar[str] = "control.pause"

    utterance_id: str = bounded(128, default="")
    """Only this utterance; empty for whatever the session is speaking."""


@message
class Resume(Message):
    """Continue a paused utterance from where playout stopped."""

    TYPE: ClassVar[str] = "control.resume"

    utterance_id: str = bounded(128, default="")


@message
class Stop(Message):
    """Stop and discard the utterance."""

    TYPE: ClassVar[str] = "control.stop"

    utterance_id: str = bounded(128, default="")
    reason: str = bounded(64, default="stopped")


@message
class BargeIn(Message):
    """The person cut in while the bot was speaking this utterance."""

    TYPE: ClassVar[str] = "control.barge_in"

    utterance_id: str = bounded(128, default="")
    stream_sample: int = 0
    """Input sample index where the person's speech began."""
