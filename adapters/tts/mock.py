"""The mock voice: a deterministic tone as long as the text would take to say. Cheap enough for
load tests of many sessions; same interface and control semantics as a real voice."""

from __future__ import annotations

from typing import Any

import numpy as np

from adapters.tts.base import SynthesisOptions, TtsEngine
from adapters.tts.text import split_sentences
from adapters.tts.voicepacks import VoicePack


class MockEngine(TtsEngine):
    """Sine tone at ``params.frequency_hz``, ``params.ms_per_char`` per character."""

    def __init__(self, voice: VoicePack) -> None:
        super().__init__(voice)
        self.frequency = float(voice.params.get("frequency_hz", 440))
        self.ms_per_char = float(voice.params.get("ms_per_char", 60))

    def plan(self, text: str, first: bool) -> list[Any]:
        return split_sentences(text)

    def render(self, unit: Any, options: SynthesisOptions) -> np.ndarray:
        seconds = len(str(unit)) * self.ms_per_char / 1000 / options.speed
        t = np.arange(int(seconds * self.voice.sample_rate)) / self.voice.sample_rate
        return (0.3 * np.sin(2 * np.pi * self.frequency * t)).astype(np.float32)
