"""Control messages: playout and synthesis control, barge-in. Never queued behind audio."""

from __future__ import annotations

from typing import Annotated, ClassVar

from bus.schema._base import Message, bounded, message
from bus.schema.tts import EndReason


@message
class Pause(Message, frozen=True, kw_only=True):
    """Pause playout / synthesis of the session's current utterance, keeping its place."""

    TYPE: ClassVar[str] = "control.pause"

    utterance_id: Annotated[str, bounded(128)] = ""
    """Only this utterance; empty for whatever the session is speaking."""


@message
class Resume(Message, frozen=True, kw_only=True):
    """Continue a paused utterance from where playout stopped."""

    TYPE: ClassVar[str] = "control.resume"

    utterance_id: Annotated[str, bounded(128)] = ""


@message
class Stop(Message, frozen=True, kw_only=True):
    """Stop and discard the utterance."""

    TYPE: ClassVar[str] = "control.stop"

    utterance_id: Annotated[str, bounded(128)] = ""
    reason: EndReason = EndReason.STOPPED


@message
class BargeInOutcome(Message, frozen=True, kw_only=True):
    """Supervisor → gateway: what the speech that held an utterance (``playout.event`` held)
    turned out to be. Words: the utterance ends ``barged_in`` and the turn is the person's.
    No words (a cough, noise, the bot's own echo): playout resumes where it was held."""

    TYPE: ClassVar[str] = "control.barge_in_outcome"

    utterance_id: Annotated[str, bounded(128)]
    words: bool
