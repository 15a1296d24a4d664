"""The TTS adapter interface, and what every engine shares: loudness, edges, 48 kHz, frames.

An engine (one per loaded voice, shared by every utterance on it) does two things:
``plan(text)`` cuts text into synthesis units cheaply, and ``render(unit)`` turns one unit into
float audio at the voice's own rate (the expensive part, run in a worker thread). Everything
per utterance lives in a :class:`Renderer`: a fixed loudness gain, a short fade at unit edges,
a stateful resampler to 48 kHz, s16le conversion. :class:`FrameSlicer` cuts the result into
exact 20 ms frames. No state is shared between utterances except the engine's read-only model
and its phrase cache.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import soxr

from adapters.tts.voicepacks import VoicePack
from bus.audio_format import BOT

FADE_S = 0.0025
"""Raised-cosine fade at both ends of every unit: joins never click."""

LIMIT_KNEE = 0.9
"""Samples above this magnitude are compressed smoothly instead of clipped."""


MMAP_THRESHOLD_BYTES = 1 << 20
"""glibc maps allocations of this size and more on pages of their own, unmapped when freed."""
MALLOC_ARENAS = 2
"""glibc heaps (arenas) at most: the main one and one that every other thread shares."""
M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8  # mallopt's parameters, glibc's malloc.h


def tune_malloc() -> None:
    """Set glibc's allocator up for a TTS worker process; call it before threads start.

    An inference's memory is freed when it ends, in regions of a few MiB. glibc raises its mmap
    threshold to the size of each large block freed and keeps later ones in its heap, where
    they fragment: RSS wandered 195-210 MiB over 300 texts; with the threshold fixed at
    :data:`MMAP_THRESHOLD_BYTES` it stays within 1 MiB, for about 5 ms more on a 70 ms first
    unit (scripts/bench_tts_memory). Rendered units (50-300 KB each, under the threshold) are
    allocated in several render threads and freed later in others; with an arena per thread
    each arena fragments on its own: in three 15-minute soaks run at once (scripts/bench_chaos
    --minutes 15 --kinds "", 2026-12-02, the arena limit set by MALLOC_ARENA_MAX in one), the
    worker's lowest RSS rose 2.6 % over its last five minutes with glibc's default arenas and
    1.1 % with two. Elsewhere than glibc this does nothing."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    mallopt(M_ARENA_MAX, MALLOC_ARENAS)


@dataclass(frozen=True, slots=True)
class SynthesisOptions:
    """Per-utterance settings a client may pass in ``tts.start`` ``options``."""

    loudness_dbfs: float = -20.0
    """Target loudness as RMS level of ordinary speech, dB below full scale."""
    speed: float = 1.0
    """Speaking rate; 1.5 is half again as fast."""

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> SynthesisOptions:
        """Validate client options; a ValueError names what is wrong."""
        known = {f.name for f in fields(cls)}
        unknown = set(options) - known
        if unknown:
            raise ValueError(f"unknown options {sorted(unknown)}; known: {sorted(known)}")
        values: dict[str, float] = {}
        for name, value in options.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"option {name} must be a number")
            values[name] = float(value)
        opts = cls(**values)
        if not -60.0 <= opts.loudness_dbfs <= -6.0:
            raise ValueError("loudness_dbfs must be between -60 and -6")
        if not 0.5 <= opts.speed <= 2.0:
            raise ValueError("speed must be between 0.5 and 2.0")
        return opts


class TtsEngine(ABC):
    """A loaded voice. ``plan`` and ``render`` may run in several threads at once."""

    def __init__(self, voice: VoicePack) -> None:
        self.voice = voice
        self.reference_rms = 0.1
        """RMS of this engine's raw output for ordinary speech; :meth:`warmup` measures it."""

    @abstractmethod
    def plan(self, text: str, first: bool) -> list[Any]:
        """Cut ``text`` (one sentence or more) into units to render in order. ``first`` is true
        for the utterance's first text: its first unit should be short, for fast first audio."""

    @abstractmethod
    def render(self, unit: Any, options: SynthesisOptions) -> np.ndarray:
        """Float32 mono audio for ``unit`` at ``voice.sample_rate``, raw level."""

    def warmup(self) -> None:
        """Run the model once (first inference is slow) and measure its reference level."""
        audio = np.concatenate(
            [self.render(u, SynthesisOptions()) for u in self.plan(CALIBRATION_TEXT, False)]
        )
        rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
        if rms > 1e-4:
            self.reference_rms = rms

    def cached_bytes(self) -> tuple[int, int]:
        """Rendered audio the engine keeps for reuse, and the most it may keep (bytes)."""
        return 0, 0

    def close(self) -> None:  # noqa: B027 - optional hook: most engines hold nothing to release
        """Release the model."""


CALIBRATION_TEXT = "This is a short sentence spoken at an ordinary level, to set the loudness."


class Renderer:
    """One utterance's path from units to 48 kHz s16le. Not shared between utterances."""

    def __init__(self, engine: TtsEngine, options: SynthesisOptions) -> None:
        self.engine = engine
        self.options = options
        self.gain = 10 ** (options.loudness_dbfs / 20) / engine.reference_rms
        rate = engine.voice.sample_rate
        self._resampler = (
            soxr.ResampleStream(rate, BOT.sample_rate, 1, dtype="float32", quality="HQ")
            if rate != BOT.sample_rate
            else None
        )
        fade_n = max(1, int(rate * FADE_S))
        self._fade = (0.5 - 0.5 * np.cos(np.linspace(0, math.pi, fade_n))).astype(np.float32)

    def render(self, unit: Any) -> bytes:
        """Synthesize one unit; returns 48 kHz s16le (any length, possibly empty)."""
        audio = self.engine.render(unit, self.options).astype(np.float32, copy=True)
        audio *= self.gain
        n = min(len(self._fade), len(audio) // 2)
        if n:
            audio[:n] *= self._fade[:n]
            audio[-n:] *= self._fade[:n][::-1]
        return self._to_pcm(audio, last=False)

    def finish(self) -> bytes:
        """The resampler's remaining output at the end of the utterance."""
        return self._to_pcm(np.zeros(0, dtype=np.float32), last=True)

    def _to_pcm(self, audio: np.ndarray, last: bool) -> bytes:
        if self._resampler is not None:
            audio = self._resampler.resample_chunk(audio, last=last)
        return pcm16(soft_limit(audio))


def soft_limit(audio: np.ndarray) -> np.ndarray:
    """Pass samples under the knee unchanged; compress the rest smoothly below full scale."""
    over = np.abs(audio) > LIMIT_KNEE
    if not over.any():
        return audio
    out = audio.copy()
    x = np.abs(audio[over]) - LIMIT_KNEE
    headroom = 1.0 - LIMIT_KNEE
    out[over] = np.sign(audio[over]) * (LIMIT_KNEE + headroom * np.tanh(x / headroom))
    return out


def pcm16(audio: np.ndarray) -> bytes:
    """Float [-1, 1] to PCM s16le bytes."""
    return bytes((np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes())


class FrameSlicer:
    """Cuts a stream of PCM bytes into exact :data:`~bus.audio_format.BOT` frames (1920 bytes)."""

    def __init__(self) -> None:
        self._pending = bytearray()

    def push(self, pcm: bytes) -> list[bytes]:
        """Whole frames now available."""
        self._pending += pcm
        size = BOT.frame_bytes
        count = len(self._pending) // size
        frames = [bytes(self._pending[i * size : (i + 1) * size]) for i in range(count)]
        del self._pending[: count * size]
        return frames

    def flush(self) -> bytes | None:
        """The last partial frame, padded with silence; None if nothing is left."""
        if not self._pending:
            return None
        frame = bytes(self._pending) + bytes(BOT.frame_bytes - len(self._pending))
        self._pending.clear()
        return frame
