"""Control messages: playout and synthesis control, barge-in. Never queued behind audio."""

from __future__ import annotations

from typing import ClassVar

from bus.schema._base import Message, bounded, message
from bus.schema.tts import EndReason


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
    reason: EndReason = EndReason.STOPPED


@message
class BargeInOutcome(Message):
    """Supervisor → gateway: what the speech that held an utterance (``playout.event`` held)
    turned out to be. Words: the utterance ends ``barged_in`` and the turn is the person's.
    No words (a cough, noise, the bot's own echo): playout resumes where it was held."""

    TYPE: ClassVar[str] = "control.barge_in_outcome"

    utterance_id: str = bounded(128)
    words: bool
