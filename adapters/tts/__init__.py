"""Text-to-speech adapters: one engine per voice family behind :class:`TtsEngine`."""

from __future__ import annotations

from adapters.tts.base import TtsEngine
from adapters.tts.voicepacks import VoicePack


def load_engine(voice: VoicePack) -> TtsEngine:
    """Load (not yet warm) the engine for ``voice``; slow for neural voices."""
    if voice.family == "piper":
        from adapters.tts.piper import PiperEngine

        return PiperEngine(voice)
    if voice.family == "mock":
        from adapters.tts.mock import MockEngine

        return MockEngine(voice)
    raise ValueError(f"{voice.model_id}: no adapter for family {voice.family!r}")
