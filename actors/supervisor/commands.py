"""What the turn core (:mod:`actors.supervisor.turns`) is told and what it asks for.

Events in are the bus messages of the gateway ⇄ supervisor contract (docs/architecture.md),
VAD's and ASR's messages, and the three reply events below, which the actor feeds back from the
dialogue adapter it runs. Commands out are the dataclasses below; the actor executes them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from adapters.dialogue import Turn
from bus.schema import Message
from bus.schema.asr import Transcript
from bus.schema.control import Pause, Resume, Stop
from bus.schema.session import (
    PlayoutEvent,
    SessionClosed,
    SessionConfig,
    SessionOpened,
    SessionText,
)
from bus.schema.vad import SpeechEnd, SpeechStart

# ------------------------------------------------------------------ events from the dialogue


@dataclass(frozen=True, slots=True)
class ReplySentence:
    """A whole sentence of the reply to turn ``turn`` (the actor cuts the adapter's stream)."""

    turn: int
    text: str


@dataclass(frozen=True, slots=True)
class ReplyDone:
    """The reply to turn ``turn`` is complete."""

    turn: int
    text: str
    """All of it, as the adapter streamed it (the client's ``reply`` event)."""


@dataclass(frozen=True, slots=True)
class ReplyFailed:
    """The dialogue adapter failed answering turn ``turn``, maybe after some sentences."""

    turn: int
    code: str
    """For the client's ``error`` (``DIALOGUE_TIMEOUT``, ``TEXT_TOO_LONG``...)."""
    message: str
    text: str = ""
    """What it streamed before it failed."""


TurnEvent = (
    SessionOpened
    | SessionConfig
    | SessionText
    | SessionClosed
    | Pause
    | Resume
    | Stop
    | PlayoutEvent
    | SpeechStart
    | SpeechEnd
    | Transcript
    | ReplySentence
    | ReplyDone
    | ReplyFailed
)
"""Everything :meth:`~actors.supervisor.turns.TurnTaking.handle` takes."""

# ------------------------------------------------------------------ commands


@dataclass(frozen=True, slots=True)
class Tell:
    """Send ``message`` to the session's gateway. A ``session.state`` is also published on
    ``session.state.<session>`` (VAD's thresholds follow it)."""

    message: Message


@dataclass(frozen=True, slots=True)
class StartReply:
    """Run the dialogue adapter on ``history`` and feed its sentences back as turn ``turn``."""

    turn: int
    dialogue: str
    """Adapter name; empty for the supervisor's default."""
    history: tuple[Turn, ...]
    """What the person heard and said, their turn last."""


@dataclass(frozen=True, slots=True)
class CancelReply:
    """Stop generating the reply to turn ``turn``: it will never be spoken."""

    turn: int


class Metric(enum.StrEnum):
    """What the core counts (the actor's Prometheus counters)."""

    BARGE_IN = "barge_in"
    FALSE_INTERRUPTION = "false_interruption"
    ECHO_IGNORED = "echo_ignored"
    USER_TURN = "user_turn"
    REFUSED_TRANSITION = "refused_transition"
    DIALOGUE_ERROR = "dialogue_error"
    """Labelled with the error code."""


@dataclass(frozen=True, slots=True)
class Count:
    """Add one to ``metric``."""

    metric: Metric
    label: str = ""


@dataclass(frozen=True, slots=True)
class CloseSession:
    """The session is over (``idle_timeout``, ``max_duration``): tell the gateway, forget it."""

    reason: str


Command = Tell | StartReply | CancelReply | Count | CloseSession
