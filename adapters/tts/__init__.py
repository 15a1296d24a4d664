"""Text-to-speech adapters: one engine per voice family behind :class:`TtsEngine`."""

from __future__ import annotations

from adapters.devices import Device
from adapters.tts.base import TtsEngine
from adapters.tts.voicepacks import VoicePack


def load_engine(voice: VoicePack, device: Device | None = None) -> TtsEngine:
    """Load (not yet warm) the engine for ``voice`` on ``device`` (None: the CPU); slow for
    neural voices. An engine that runs only on the CPU (``mock``) ignores the device."""
    if voice.family == "piper":
        from adapters.tts.piper import PiperEngine

        return PiperEngine(voice, device)
    if voice.family == "mock":
        from adapters.tts.mock import MockEngine

        return MockEngine(voice)
    raise ValueError(f"{voice.model_id}: no adapter for family {voice.family!r}")
