"""Audio messages: PCM frames on the bus. The PCM travels as the raw payload frame."""

from __future__ import annotations

from typing import Annotated, ClassVar

from bus.schema._base import Message, Priority, bounded, message

MAX_FRAME_BYTES = 64 * 1024
"""Largest PCM chunk one message may carry (over 0.3 s of 48 kHz mono s16le)."""


@message
class AudioFrame(Message, frozen=True, kw_only=True):
    """A chunk of mono or interleaved PCM s16le audio in a session's stream."""

    TYPE: ClassVar[str] = "audio.frame"
    PRIORITY: ClassVar[Priority] = Priority.DATA
    PAYLOAD: ClassVar[str | None] = "pcm"

    sample_rate: int
    """Samples per second per channel, Hertz."""
    sequence: int
    """Frame number within the stream, from 0, contiguous."""
    stream_sample: int
    """Index of the first sample of this frame in the session's stream (stream time)."""
    pcm: Annotated[bytes, bounded(MAX_FRAME_BYTES)]
    """PCM s16le, little-endian, interleaved when ``channels`` > 1."""
    channels: int = 1
    """Channel count."""

    def __post_init__(self) -> None:
        if not 8000 <= self.sample_rate <= 192_000:
            raise ValueError(f"sample_rate {self.sample_rate} outside 8000..192000")
        if not 1 <= self.channels <= 8:
            raise ValueError(f"channels {self.channels} outside 1..8")
        if len(self.pcm) % (2 * self.channels):
            raise ValueError("pcm length is not a whole number of s16le samples")
        if self.sequence < 0 or self.stream_sample < 0:
            raise ValueError("sequence and stream_sample must be >= 0")

    @property
    def duration_ms(self) -> float:
        """Length of this frame in milliseconds."""
        return 1000.0 * len(self.pcm) / (2 * self.channels * self.sample_rate)
