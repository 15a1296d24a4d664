"""Speech recognition messages."""

from __future__ import annotations

import enum
from typing import Annotated, ClassVar

from bus.schema._base import Finite, Message, Priority, bounded, message


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


MAX_REQUEST_CHUNK_BYTES = 256 * 1024
"""Largest PCM chunk of one ``asr.audio`` message (8 s of 16 kHz mono s16le)."""


class Answer(enum.StrEnum):
    """What an ``asr.audio`` chunk asks for."""

    NONE = ""
    """Nothing: more audio follows."""
    PARTIAL = "partial"
    """A transcript of the audio so far."""
    FINAL = "final"
    """The transcript of all of it; the request ends."""


@message
class RequestAudio(Message, frozen=True, kw_only=True):
    """Audio of a transcription request, sent to one ASR's inbox (the Wyoming server, the
    OpenAI ``/v1/audio/transcriptions`` endpoint): 16 kHz mono PCM s16le in chunks numbered
    from 0, the envelope ``session`` naming the request. A chunk with ``answer`` ``partial``
    asks for a transcript of the audio so far, ``final`` for the transcript of all of it (and
    ends the request); each is answered with ``asr.result``. A gap in the numbering, a request
    over the ASR's bounds or one it has forgotten is answered ``error`` when it asks."""

    TYPE: ClassVar[str] = "asr.audio"
    PRIORITY: ClassVar[Priority] = Priority.DATA
    PAYLOAD: ClassVar[str | None] = "pcm"

    sequence: int
    """Chunk number within the request, from 0, contiguous."""
    pcm: Annotated[bytes, bounded(MAX_REQUEST_CHUNK_BYTES)]
    """16 kHz mono PCM s16le (may be empty on the chunk that only asks)."""
    answer: Answer = Answer.NONE
    language: Annotated[str, bounded(16)] = ""
    """The language the client says it speaks (empty: the model's)."""

    def __post_init__(self) -> None:
        if self.sequence < 0:
            raise ValueError("sequence must be >= 0")
        if len(self.pcm) % 2:
            raise ValueError("pcm length is not a whole number of s16le samples")


@message
class Segment(Message, frozen=True, kw_only=True):
    """A span of a request's audio and its words."""

    TYPE: ClassVar[str] = "asr.segment"

    start_s: Finite
    end_s: Finite
    text: Annotated[str, bounded(4096)]


@message
class RequestResult(Message, frozen=True, kw_only=True):
    """The answer to an ``asr.audio`` that asked: the words of the request's audio so far
    (``final`` false) or of all of it."""

    TYPE: ClassVar[str] = "asr.result"

    text: Annotated[str, bounded(65536)]
    final: bool
    language: Annotated[str, bounded(16)] = ""
    duration_s: Finite = 0.0
    """Seconds of audio transcribed."""
    rtf: Finite = 0.0
    segments: Annotated[tuple[Segment, ...], bounded(1024)] = ()
    """Whisper's segments (one for audio of up to 30 s)."""
