"""The person's audio into the system: any-length PCM chunks in, 16 kHz mono 20 ms frames out.

A client sends PCM s16le mono at its ``input_sample_rate`` (16 or 48 kHz) in chunks of any
length. 48 kHz goes through one soxr stream resampler per session, which keeps its filter state
between chunks: chunk boundaries leave no clicks or phase jumps (resampling every chunk on its
own would). The output is cut into 320-sample frames, numbered and stamped with the index of
their first sample in the session's 16 kHz stream (stream time, which VAD and ASR count in).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr

from bus.audio_format import INPUT_RATES, MIC

MAX_PENDING_BYTES = 64 * 1024
"""Audio the re-framer holds between chunks at most (it never needs more than one frame)."""


@dataclass(frozen=True, slots=True)
class MicFrame:
    sequence: int
    stream_sample: int
    pcm: bytes


class MicInput:
    """One session's microphone stream; see the module docstring."""

    def __init__(self, input_rate: int = MIC.sample_rate) -> None:
        self.sequence = 0
        self.stream_sample = 0
        self.input_rate = MIC.sample_rate
        self._resampler: soxr.ResampleStream | None = None
        self._pending = bytearray()
        self.set_rate(input_rate)

    def set_rate(self, input_rate: int) -> None:
        """Change the input rate (between chunks); stream time keeps counting."""
        if input_rate not in INPUT_RATES:
            raise ValueError(f"input_sample_rate must be one of {INPUT_RATES}, not {input_rate}")
        resampled = input_rate != MIC.sample_rate
        if input_rate == self.input_rate and (self._resampler is not None) == resampled:
            return
        self.input_rate = input_rate
        self._resampler = (
            soxr.ResampleStream(input_rate, MIC.sample_rate, 1, dtype="int16", quality="HQ")
            if resampled
            else None
        )

    def push(self, pcm: bytes) -> list[MicFrame]:
        """Add a chunk; returns the whole frames it completed."""
        if len(pcm) % 2:
            raise ValueError("microphone audio must be whole s16le samples")
        if self._resampler is not None:
            samples = np.frombuffer(pcm, dtype="<i2")
            pcm = self._resampler.resample_chunk(samples).astype("<i2").tobytes()
        self._pending.extend(pcm)
        frames = []
        size = MIC.frame_bytes
        while len(self._pending) >= size:
            chunk = bytes(self._pending[:size])
            del self._pending[:size]
            frames.append(MicFrame(self.sequence, self.stream_sample, chunk))
            self.sequence += 1
            self.stream_sample += MIC.frame_samples
        if len(self._pending) > MAX_PENDING_BYTES:  # cannot happen; bounded all the same
            del self._pending[:-size]
        return frames

    @property
    def pending_samples(self) -> int:
        """Samples received (after resampling) that make no whole frame yet."""
        return len(self._pending) // 2

    @property
    def stream_ms(self) -> float:
        return MIC.ms(self.stream_sample)
