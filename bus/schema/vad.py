"""Voice activity messages, stamped in stream time (sample index in the session's input)."""

from __future__ import annotations

from typing import ClassVar

from bus.schema._base import Message, message


@message
class SpeechStart(Message):
    """The person started speaking at ``stream_sample`` (after debounce, pre-roll included)."""

    TYPE: ClassVar[str] = "vad.speech_start"

    stream_sample: int
    """Sample index in the session's input stream where speech begins."""
    sample_rate: int = 16_000
    """Rate of the stream the index counts in, Hertz."""


@message
class SpeechEnd(Message):
    """The person stopped speaking at ``stream_sample``."""

    TYPE: ClassVar[str] = "vad.speech_end"

    stream_sample: int
    """Sample index in the session's input stream where speech ended."""
    sample_rate: int = 16_000
    """Rate of the stream the index counts in, Hertz."""
