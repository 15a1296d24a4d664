"""A TTS worker's settings: ``actors.tts_worker`` in topology.yaml."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from adapters import devices
from adapters.tts.voicepacks import DEFAULT_DIR


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """``actors.tts_worker`` in topology.yaml, read with :func:`bus.settings.load_settings`."""

    voicepacks: tuple[Path, ...] = (DEFAULT_DIR,)
    """Folders of voice packs (each holds one sub-folder per voice)."""
    default_voice: str = "piper-en_US-joe-medium"
    """Loaded at start and never evicted; what an utterance naming no voice speaks with."""
    preload: tuple[str, ...] = ()
    """More voices loaded at start."""
    max_resident: int = 4
    """Voice models held in memory at most (least recently used evicted; never one in use)."""
    ttl_s: float = 600.0
    """Seconds an idle model stays loaded."""
    min_residency_s: float = 30.0
    """Seconds a model stays loaded at least, however idle."""
    max_parallel_loads: int = 1
    """Models loading at once."""
    max_streams: int = 8
    """Utterances spoken at once; more are refused with ``BUSY``."""
    default_credit: int = 50
    """Frames sent before the consumer grants credit, when it names none (1 s)."""
    max_credit: int = 500
    """Most frames a worker runs ahead of playout (10 s)."""
    max_stream_wait_s: float = 60.0
    """An utterance that has waited this long for credit or a resume (its consumer stalled,
    paused for good, or gone without a word) ends ``error``: its stream slot is freed."""
    device: str = "cpu"
    """Where Piper runs: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (a GPU when ONNX Runtime's
    CUDA provider, ``onnxruntime-gpu``, sees one)."""
    render_slots: int = 1
    """Renders at once across all utterances, most urgent first (see RenderScheduler)."""
    nice: int = 0
    """Lower the worker's CPU priority by this much (0..19): synthesis runs ahead of playout,
    so it can yield the CPU to the gateway's real-time pacing on a shared machine."""

    def __post_init__(self) -> None:
        devices.check(self.device)
        for name in ("max_resident", "max_parallel_loads", "max_streams", "max_credit"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} {getattr(self, name)} must be at least 1")
        if self.max_stream_wait_s <= 0:
            raise ValueError(f"max_stream_wait_s {self.max_stream_wait_s} must be positive")
        if not 0 <= self.nice <= 19:
            raise ValueError(f"nice {self.nice} is outside 0..19")
