"""Speech start and end from per-frame voice scores: debounce, pre-roll and a noise gate.

A frame counts as voiced when the model's score reaches the threshold **and** its level is above
the noise gate. A gated frame is silence, never "no information": a quiet room behind the gate
still ends speech. Speech starts after ``min_speech_ms`` of consecutive voiced frames (stamped
at the first of them) and ends after ``min_silence_ms`` of consecutive silent ones (stamped at
the first silent one). ``SpeechStart`` also carries where the audio with ``preroll_ms`` of
pre-roll begins, which is what ASR transcribes. While the bot speaks, stricter settings apply
(a higher gate, a higher threshold, a longer minimum): echo of the bot's own voice and room
noise must work harder to interrupt it. All stamps are sample indexes of the input stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from adapters.vad.models import VadModel
from bus.audio_format import FRAME_MS, MIC


@dataclass(frozen=True, slots=True)
class Thresholds:
    """One set of decision settings."""

    threshold: float
    """Model score at or above which a frame is voiced."""
    gate_dbfs: float
    """Frames quieter than this (RMS, dB full scale) are silence whatever the model says."""
    min_speech_frames: int


@dataclass(frozen=True, slots=True)
class DetectorConfig:
    """What the detector decides with: one set of thresholds while the person is listened to,
    a stricter one while the bot speaks, and the run lengths in frames or samples."""

    listening: Thresholds
    speaking: Thresholds
    """Used while the bot is speaking to this session."""
    min_silence_frames: int
    preroll_samples: int
    max_speech_samples: int
    """A longer run of speech is cut (ended) here, so ASR's buffer stays bounded."""

    @classmethod
    def from_ms(
        cls,
        *,
        threshold: float,
        gate_dbfs: float,
        min_speech_ms: float,
        speaking_threshold: float,
        speaking_gate_dbfs: float,
        speaking_min_speech_ms: float,
        min_silence_ms: float,
        preroll_ms: float,
        max_speech_s: float,
    ) -> DetectorConfig:
        """The config from durations in milliseconds (seconds for ``max_speech_s``), each run
        of frames at least one frame long. The VAD actor's settings are what call this."""

        def frames(ms: float) -> int:
            return max(1, round(ms / FRAME_MS))

        return cls(
            listening=Thresholds(threshold, gate_dbfs, frames(min_speech_ms)),
            speaking=Thresholds(
                speaking_threshold, speaking_gate_dbfs, frames(speaking_min_speech_ms)
            ),
            min_silence_frames=frames(min_silence_ms),
            preroll_samples=int(preroll_ms * MIC.sample_rate / 1000),
            max_speech_samples=int(max_speech_s * MIC.sample_rate),
        )


def level_dbfs(frame: bytes) -> float:
    """RMS level of an s16le frame in dB full scale (-120 for digital silence)."""
    samples = np.frombuffer(frame, dtype="<i2").astype(np.float32)
    rms = float(np.sqrt(np.mean(samples * samples))) / 32768.0 if len(samples) else 0.0
    return 20.0 * np.log10(rms) if rms > 1e-6 else -120.0


@dataclass(frozen=True, slots=True)
class Boundary:
    """A decision: speech started or ended at ``sample``."""

    kind: str
    """``start`` or ``end``."""
    sample: int
    preroll_sample: int = 0
    strict: bool = False
    """Decided with the while-the-bot-speaks settings."""


class Detector:
    """One stream's speech boundaries; feed it every frame in order."""

    def __init__(self, model: VadModel, config: DetectorConfig) -> None:
        self.model = model
        self.config = config
        self.speaking = False
        """The person is speaking (between a start and an end)."""
        self.next_sample = 0
        """Stream sample after the last frame fed."""
        self.frames = 0
        self.gated = 0
        """Frames the noise gate silenced."""
        self._run = 0
        self._run_start = 0
        self._speech_start = 0

    def feed(self, frame: bytes, stream_sample: int, bot_speaking: bool) -> Boundary | None:
        """Judge one 20 ms frame starting at ``stream_sample``; a boundary if one was decided."""
        if len(frame) != MIC.frame_bytes:
            raise ValueError(f"VAD frames are {MIC.frame_bytes} bytes, not {len(frame)}")
        t = self.config.speaking if bot_speaking else self.config.listening
        self.frames += 1
        self.next_sample = stream_sample + MIC.frame_samples
        loud = level_dbfs(frame) >= t.gate_dbfs
        score = self.model.score(frame, bot_speaking)  # always fed: models keep stream state
        if not loud:
            self.gated += 1
        voiced = loud and score >= t.threshold
        if not self.speaking:
            if not voiced:
                self._run = 0
                return None
            if self._run == 0:
                self._run_start = stream_sample
            self._run += 1
            if self._run < t.min_speech_frames:
                return None
            self.speaking, self._run = True, 0
            self._speech_start = self._run_start
            preroll = max(0, self._run_start - self.config.preroll_samples)
            return Boundary("start", self._run_start, preroll, bot_speaking)
        if voiced:
            self._run = 0
            if self.next_sample - self._speech_start >= self.config.max_speech_samples:
                return self._end(self.next_sample)
            return None
        if self._run == 0:
            self._run_start = stream_sample
        self._run += 1
        if self._run >= self.config.min_silence_frames:
            return self._end(self._run_start)
        return None

    def flush(self) -> Boundary | None:
        """The stream stopped (no frames): end any speech where the audio stopped."""
        return self._end(self.next_sample) if self.speaking else None

    def _end(self, sample: int) -> Boundary:
        self.speaking, self._run = False, 0
        return Boundary("end", sample)
