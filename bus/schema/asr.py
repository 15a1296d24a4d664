"""Speech recognition messages."""

from __future__ import annotations

from typing import Annotated, ClassVar

from bus.schema._base import Finite, Message, bounded, message


@message
class Transcript(Message, frozen=True, kw_only=True):
    """Words heard in a span of the session's input stream."""

    TYPE: ClassVar[str] = "asr.transcript"

    text: Annotated[str, bounded(4096)]
    """The words, as recognised."""
    final: bool
    """True once ``speech_end`` closed the span; partial transcripts may still change."""
    start_sample: int = 0
    """First sample of the span in the input stream."""
    end_sample: int = 0
    """Sample after the last of the span in the input stream."""
    language: Annotated[str, bounded(16)] = ""
    """BCP-47 language code, if known."""
    rtf: Finite = 0.0
    """Real-time factor of the recognition that produced it (compute / audio seconds)."""
