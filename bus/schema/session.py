"""Session messages between gateways and supervisors: lifecycle, state, what to speak, and
what playout did (docs/architecture.md, "Gateway ⇄ supervisor")."""

from __future__ import annotations

import enum
from typing import Annotated, ClassVar

from bus.schema._base import Message, bounded, message
from bus.schema.tts import EndReason


class SessionState(enum.StrEnum):
    """What the session is doing, as the client sees it in ``state`` events."""

    IDLE = "IDLE"
    LISTENING = "LISTENING"
    THINKING = "THINKING"
    SPEAKING = "SPEAKING"
    PAUSED = "PAUSED"
    BARGED_IN = "BARGED_IN"
    ENDED = "ENDED"


class PlayoutEventKind(enum.StrEnum):
    """What happened to an utterance at the gateway's playout."""

    STARTED = "started"
    """Its first frame went to the client."""
    HELD = "held"
    """The person started speaking over it: playout is silent, the worker paused, until the
    supervisor's :class:`~bus.schema.control.BargeInOutcome`."""
    ENDED = "ended"
    """Its last frame went out, or it was stopped, cut or failed (``reason``)."""


@message
class SessionOpened(Message, frozen=True, kw_only=True):
    """A client connected; the session id is the envelope's ``session``."""

    TYPE: ClassVar[str] = "session.opened"

    gateway: Annotated[str, bounded(128)]
    """Actor id of the gateway holding the client connection."""
    transport: Annotated[str, bounded(32)] = "websocket"
    """How the client is connected (``websocket``, ``webrtc``), for the supervisor's log."""


@message
class SessionClosed(Message, frozen=True, kw_only=True):
    """A session ended."""

    TYPE: ClassVar[str] = "session.closed"

    reason: Annotated[str, bounded(256)]
    """``client_end``, ``client_closed``, ``idle_timeout``, ``max_duration``, ``shutdown``..."""


@message
class ServeSession(Message, frozen=True, kw_only=True):
    """To one VAD or ASR's inbox, from the session's gateway: hear the session named in the
    envelope (its ``audio.in.``, ``vad.`` and ``session.state.`` topics) from now on."""

    TYPE: ClassVar[str] = "session.serve"


@message
class DropSession(Message, frozen=True, kw_only=True):
    """To one VAD or ASR's inbox: stop hearing the session (it ended, or moved elsewhere).
    From a VAD or ASR to the gateway, in answer to ``session.serve``: refused, it is full."""

    TYPE: ClassVar[str] = "session.drop"


@message
class StateChanged(Message, frozen=True, kw_only=True):
    """The session's state machine moved."""

    TYPE: ClassVar[str] = "session.state"

    state: SessionState


@message
class SessionText(Message, frozen=True, kw_only=True):
    """Gateway → supervisor: the client asked for this text to be spoken."""

    TYPE: ClassVar[str] = "session.text"

    text: Annotated[str, bounded(8192)]
    voice: Annotated[str, bounded(128)] = ""
    """The session's chosen voice; empty for the worker's default."""


@message
class PlayoutSpeak(Message, frozen=True, kw_only=True):
    """Supervisor → gateway: speak this utterance into the session's playout. The gateway asks
    the router for a worker and owns the utterance's stream from then on."""

    TYPE: ClassVar[str] = "playout.speak"

    utterance_id: Annotated[str, bounded(128)]
    text: Annotated[str, bounded(8192)]
    voice: Annotated[str, bounded(128)] = ""
    """Voice id; empty for the router's choice (a worker's default)."""
    final: bool = True
    """False when more text follows in :class:`PlayoutText` (a reply still streaming)."""
    answers_sample: int = -1
    """For a reply: the input stream sample where the person's turn ended (``speech_end``), so
    the gateway can time the turn (end of speech → first reply frame); -1 otherwise."""


@message
class PlayoutText(Message, frozen=True, kw_only=True):
    """Supervisor → gateway: more text for the utterance it is speaking (a streamed reply)."""

    TYPE: ClassVar[str] = "playout.text"

    utterance_id: Annotated[str, bounded(128)]
    text: Annotated[str, bounded(8192)]
    final: bool = False


@message
class SessionConfig(Message, frozen=True, kw_only=True):
    """Gateway → supervisor: the client's session settings changed."""

    TYPE: ClassVar[str] = "session.config"

    voice: Annotated[str, bounded(128)] = ""
    dialogue: Annotated[str, bounded(32)] = ""
    """The dialogue adapter for replies; empty for the supervisor's default."""


@message
class SessionReply(Message, frozen=True, kw_only=True):
    """Supervisor → gateway: the dialogue's reply text, for the client's ``reply`` event."""

    TYPE: ClassVar[str] = "session.reply"

    text: Annotated[str, bounded(8192)]


@message
class PlayoutEvent(Message, frozen=True, kw_only=True):
    """Gateway → supervisor: an utterance started or finished playing to the client."""

    TYPE: ClassVar[str] = "playout.event"

    utterance_id: Annotated[str, bounded(128)]
    event: PlayoutEventKind
    reason: EndReason = EndReason.COMPLETED
    """For ``ended``: why."""
    frames: int = 0
    """Frames the person heard."""
    heard: Annotated[str, bounded(8192)] = ""
    """For ``ended``: the utterance's text up to where playout stopped (all of it when
    completed): what the person actually heard."""
