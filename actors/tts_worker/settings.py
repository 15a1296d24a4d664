"""A TTS worker's settings: ``actors.tts_worker`` in topology.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from adapters.tts.voicepacks import DEFAULT_DIR


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """``actors.tts_worker`` in topology.yaml."""

    voicepacks: tuple[Path, ...] = (DEFAULT_DIR,)
    """Folders of voice packs (each holds one sub-folder per voice)."""
    default_voice: str = "piper-en_US-joe-medium"
    preload: tuple[str, ...] = ()
    max_resident: int = 4
    ttl_s: float = 600.0
    min_residency_s: float = 30.0
    max_parallel_loads: int = 1
    max_streams: int = 8
    """Utterances spoken at once; more are refused with ``BUSY``."""
    default_credit: int = 50
    """Frames sent before the consumer grants credit, when it names none (1 s)."""
    max_credit: int = 500
    """Most frames a worker runs ahead of playout (10 s)."""
    render_slots: int = 1
    """Renders at once across all utterances, most urgent first (see RenderScheduler)."""
    nice: int = 0
    """Lower the worker's CPU priority by this much (0..19): synthesis runs ahead of playout,
    so it can yield the CPU to the gateway's real-time pacing on a shared machine."""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> WorkerSettings:
        known = {f.name for f in fields(cls)} - {"extra"}
        unknown = set(settings) - known
        if unknown:
            raise ValueError(f"actors.tts_worker: unknown settings {sorted(unknown)}")
        values = dict(settings)
        if "voicepacks" in values:
            values["voicepacks"] = tuple(Path(p) for p in values["voicepacks"])
        if "preload" in values:
            values["preload"] = tuple(values["preload"])
        return cls(**values)
