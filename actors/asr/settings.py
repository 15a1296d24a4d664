"""The ASR actor's settings: ``actors.asr`` in topology.yaml."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from adapters import devices


@dataclass(frozen=True, slots=True)
class AsrSettings:
    """``actors.asr`` in topology.yaml: the Whisper model and how it is run, and when
    transcripts are made (see :mod:`adapters.asr.whisper` for ``context``)."""

    model_path: str = ""
    """A CTranslate2 Whisper model folder; empty: the bundled tiny.en."""
    device: str = "cpu"
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (a GPU when CTranslate2 sees one)."""
    compute_type: str = "auto"
    """CTranslate2's compute type; ``auto``: ``int8`` on a CPU, ``float16`` on a GPU."""
    cpu_threads: int = 2
    context: Literal["auto", "full"] = "auto"
    """``auto``: encode the speech plus 5 s (fast); ``full``: Whisper's 30 s windows."""
    language: str = "en"
    beam_size: int = 5
    """Beam width of finals, 1..10 (partials are greedy)."""
    partial_interval_ms: float = 500.0
    """Milliseconds between partial transcripts while the person speaks; 0: none."""
    tail_ms: float = 120.0
    """Milliseconds of audio after ``speech_end`` that are transcribed too."""
    max_sessions: int = 200
    """Sessions transcribed at once; audio of more is ignored."""
    max_requests: int = 16
    """Transcription requests (Wyoming, ``/v1/audio/transcriptions``) open at once."""
    max_request_s: float = 600.0
    """Seconds of audio one transcription request may hold."""

    def __post_init__(self) -> None:
        devices.check(self.device)
        if not 1 <= self.beam_size <= 10:
            raise ValueError(f"beam_size {self.beam_size} is outside 1..10")
        if self.cpu_threads < 0:
            raise ValueError(f"cpu_threads {self.cpu_threads} is below 0")
        if self.max_requests < 1 or self.max_request_s <= 0:
            raise ValueError("max_requests and max_request_s must be positive")
        if self.partial_interval_ms < 0 or self.tail_ms < 0:
            raise ValueError("partial_interval_ms and tail_ms must not be negative")
