"""Session lifecycle messages."""

from __future__ import annotations

from typing import ClassVar

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
