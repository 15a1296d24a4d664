"""Voice activity messages, stamped in stream time (sample index in the session's input)."""

from __future__ import annotations

from typing import ClassVar

from bus.audio_format import MIC
from bus.schema._base import Message, message


@message
class SpeechStart(Message, frozen=True, kw_only=True):
    """The person started speaking at ``stream_sample``; sent once the debounce is satisfied."""

    TYPE: ClassVar[str] = "vad.speech_start"

    stream_sample: int
    """Sample index in the session's input stream where speech begins."""
    preroll_sample: int = 0
    """Where the speech's audio starts with the pre-roll: what ASR should transcribe from."""
    sample_rate: int = MIC.sample_rate
    """Rate of the stream the index counts in, Hertz."""


@message
class SpeechEnd(Message, frozen=True, kw_only=True):
    """The person stopped speaking at ``stream_sample`` (after the minimum silence; a stream
    that stops sending audio mid-speech ends it too)."""

    TYPE: ClassVar[str] = "vad.speech_end"

    stream_sample: int
    """Sample index in the session's input stream where speech ended."""
    sample_rate: int = MIC.sample_rate
    """Rate of the stream the index counts in, Hertz."""
