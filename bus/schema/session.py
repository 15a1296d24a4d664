"""Session lifecycle messages."""

from __future__ import annotations

from typing import Any, ClassVar

from bus.schema._base import Message, bounded, message


@message
class SessionOpened(Message):
    """A client connected; the session id is the envelope's ``session``."""

    TYPE: ClassVar[str] = "session.opened"

    transport: str = bounded(32)
    """``websocket`` or ``webrtc``."""
    gateway: str = bounded(128)
    """Actor id of the gateway holding the client connection."""
    input_sample_rate: int = 16_000
    """Rate of the microphone audio the gateway puts on the bus, Hertz."""


@message
class SessionClosed(Message):
    """A session ended."""

    TYPE: ClassVar[str] = "session.closed"

    reason: str = bounded(256)
    """``client_closed``, ``idle_timeout``, ``max_duration``, ``error``..."""


@message
class StateChanged(Message):
    """The session's state machine moved."""

    TYPE: ClassVar[str] = "session.state"

    state: str = bounded(32)
    """New state, e.g. ``LISTENING``, ``SPEAKING``, ``BARGED_IN``."""
    previous: str = bounded(32, default="")
    """State before the transition."""


@message
class SessionText(Message):
    """Gateway → supervisor: the client asked for this text to be spoken."""

    TYPE: ClassVar[str] = "session.text"

    text: str = bounded(8192)
    voice: str = bounded(128, default="")
    """The session's chosen voice; empty for the worker's default."""


@message
class PlayoutSpeak(Message):
    """Supervisor → gateway: speak this utterance with this worker, into the session's playout."""

    TYPE: ClassVar[str] = "playout.speak"

    utterance_id: str = bounded(128)
    text: str = bounded(8192)
    worker_id: str = bounded(128)
    voice: str = bounded(128, default="")
    final: bool = True
    """False when more text follows in :class:`PlayoutText` (a reply still streaming)."""
    answers_sample: int = -1
    """For a reply: the input stream sample where the person's turn ended (``speech_end``), so
    the gateway can time the turn (end of speech → first reply frame); -1 otherwise."""


@message
class PlayoutText(Message):
    """Supervisor → gateway: more text for the utterance it is speaking (a streamed reply)."""

    TYPE: ClassVar[str] = "playout.text"

    utterance_id: str = bounded(128)
    text: str = bounded(8192)
    final: bool = False


@message
class SessionConfig(Message):
    """Gateway → supervisor: the client's session settings changed."""

    TYPE: ClassVar[str] = "session.config"

    voice: str = bounded(128, default="")
    dialogue: str = bounded(32, default="echo")


@message
class SessionEvent(Message):
    """Supervisor → gateway: something for the client to see (``reply`` text, ``barge_in``).
    The gateway turns it into ``{"type": kind, **fields}``."""

    TYPE: ClassVar[str] = "session.event"

    kind: str = bounded(32)
    fields: dict[str, Any] = bounded(16, default={})


@message
class PlayoutEvent(Message):
    """Gateway → supervisor: an utterance started or finished playing to the client."""

    TYPE: ClassVar[str] = "playout.event"

    utterance_id: str = bounded(128)
    event: str = bounded(16)
    """``started`` or ``ended``."""
    reason: str = bounded(32, default="")
    """For ``ended``: completed, stopped, barged_in or error."""
    frames: int = 0
    """Frames the person heard."""
    heard: str = bounded(8192, default="")
    """For ``ended``: the utterance's text up to where playout stopped (all of it when
    completed): what the person actually heard."""
