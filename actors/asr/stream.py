"""One session's audio as the ASR actor keeps it: the recent samples in stream time (a pre-roll's
worth between speeches, the whole speech while it lasts), where the speech started, the last
loud frame (a pause is 100 ms under -45 dBFS), and VAD's events waiting for their audio.

No sockets and no model here: the actor (:mod:`.actor`) feeds frames and reads audio out.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from adapters.asr.whisper import Recognition
from bus.audio_format import MIC
from bus.schema.vad import SpeechEnd, SpeechStart

KEEP_S = 2.0
"""Audio kept before speech starts (pre-roll reaches back into it)."""
MAX_SPEECH_S = 30.0
PAUSE_SAMPLES = MIC.samples(100)
QUIET = 32768 * 10 ** (-45 / 20)
"""RMS under -45 dBFS: a pause."""


@dataclass(slots=True)
class Early:
    """A final computed in a pause: valid if speech ends there with nothing loud after."""

    start: int
    end: int
    """Stream sample after the audio it heard."""
    result: Recognition | None = None
    wanted: float | None = None
    """When speech_end asked for it while it was still running."""


@dataclass(slots=True)
class Stream:
    """One session's recent audio: ``pcm`` starts at stream sample ``base``."""

    pcm: bytearray = field(default_factory=bytearray)
    base: int = 0
    speech_from: int | None = None
    """Where the current speech (with pre-roll) starts; None between speeches."""
    loud_end: int = 0
    """Stream sample after the last frame above -45 dBFS."""
    last_partial: float = 0.0
    partial_text: str = ""
    partial_busy: bool = False
    early: Early | None = None
    last_frame: float = field(default_factory=time.monotonic)
    boundaries: deque[tuple[SpeechStart | SpeechEnd, float]] = field(
        default_factory=lambda: deque(maxlen=64)
    )
    """VAD's events, in order, with when each came: a speech_end waits here until the audio up
    to it has come too, and what follows it waits behind it."""

    @property
    def end(self) -> int:
        return self.base + len(self.pcm) // 2

    def append(self, stream_sample: int, pcm: bytes) -> None:
        if not self.pcm:
            self.base = stream_sample
        elif stream_sample > self.end:  # frames lost: keep stream time honest with silence
            gap = stream_sample - self.end
            if gap <= MIC.sample_rate:  # up to a second
                self.pcm.extend(bytes(2 * gap))
            else:
                self.pcm.clear()
                self.base = stream_sample
        elif stream_sample < self.end:
            return  # a repeat
        self.pcm.extend(pcm)
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
        if len(samples) and float(np.sqrt(np.mean(samples * samples))) >= QUIET:
            self.loud_end = self.end
        keep_from = self.end - int(KEEP_S * MIC.sample_rate)
        if self.speech_from is not None:
            keep_from = max(self.speech_from, self.end - int(MAX_SPEECH_S * MIC.sample_rate))
        if keep_from > self.base:
            del self.pcm[: 2 * (keep_from - self.base)]
            self.base = keep_from

    def pausing(self) -> bool:
        """The last 100 ms are quiet: speech may be ending."""
        return self.end - self.loud_end >= PAUSE_SAMPLES

    def audio(self, start: int, end: int | None = None) -> np.ndarray:
        """Float32 samples ``[start, end)`` of what is kept."""
        lo = max(0, start - self.base)
        hi = (
            len(self.pcm) // 2 if end is None else max(lo, min(len(self.pcm) // 2, end - self.base))
        )
        samples = np.frombuffer(bytes(self.pcm[2 * lo : 2 * hi]), dtype="<i2")
        return samples.astype(np.float32) / 32768.0
