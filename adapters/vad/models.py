"""Voice activity models: how likely one 20 ms frame of 16 kHz speech is to be a voice.

``webrtc`` (the default) is Google's WebRTC GMM detector from ``webrtcvad-wheels``: a 0/1 answer
per frame, microseconds each, with an aggressiveness (0 lenient … 3 strict) that can differ while
the bot speaks. ``silero`` runs Silero VAD's bundled ONNX file through onnxruntime (no torch):
a probability per 32 ms window, a few hundred microseconds each, much better at ignoring noise.
Both keep per-stream state, so there is one model object per session.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bus.audio_format import MIC


class VadModel(Protocol):
    """Scores frames of one stream, in order."""

    def score(self, frame: bytes, strict: bool) -> float:
        """Speech probability (0..1) of one 20 ms s16le frame; ``strict`` while the bot speaks."""
        ...


class WebRtcVad:
    """webrtcvad: ``aggressiveness`` normally, ``strict_aggressiveness`` while the bot speaks."""

    def __init__(self, aggressiveness: int = 2, strict_aggressiveness: int = 2) -> None:
        import webrtcvad

        for value in (aggressiveness, strict_aggressiveness):
            if value not in (0, 1, 2, 3):
                raise ValueError(f"webrtcvad aggressiveness {value} is not 0..3")
        self._normal = webrtcvad.Vad(aggressiveness)
        self._strict = webrtcvad.Vad(strict_aggressiveness)

    def score(self, frame: bytes, strict: bool) -> float:
        vad = self._strict if strict else self._normal
        return 1.0 if vad.is_speech(frame, MIC.sample_rate) else 0.0


def silero_model_path() -> Path:
    """The ONNX file inside the installed ``silero-vad`` wheel, found without importing the
    package (its ``__init__`` imports torch)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "silero-vad is not installed: pip install --no-deps silero-vad (scripts/setup does)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"
    if not path.is_file():
        raise RuntimeError(f"silero-vad is installed but {path} is missing")
    return path


class _SileroSession:
    """One onnxruntime session, shared by every stream of an actor (state lives per stream)."""

    _instance: Any = None

    @classmethod
    def get(cls) -> Any:
        if cls._instance is None:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.inter_op_num_threads = 1
            options.intra_op_num_threads = 1
            cls._instance = onnxruntime.InferenceSession(
                str(silero_model_path()), sess_options=options, providers=["CPUExecutionProvider"]
            )
        return cls._instance


class SileroVad:
    """Silero VAD v5+: 512-sample windows with 64 samples of context and a recurrent state.
    A 20 ms frame gets the probability of the newest window that ended within it."""

    WINDOW = 512
    CONTEXT = 64

    def __init__(self) -> None:
        self._session = _SileroSession.get()
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros((1, self.CONTEXT), dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._sr = np.array(MIC.sample_rate, dtype=np.int64)
        self._last = 0.0

    def score(self, frame: bytes, strict: bool) -> float:
        samples = np.frombuffer(frame, dtype="<i2").astype(np.float32) / 32768.0
        self._pending = np.concatenate([self._pending, samples])
        while len(self._pending) >= self.WINDOW:
            window, self._pending = self._pending[: self.WINDOW], self._pending[self.WINDOW :]
            x = np.concatenate([self._context, window[None, :]], axis=1)
            out, self._state = self._session.run(
                None, {"input": x, "state": self._state, "sr": self._sr}
            )
            self._context = x[:, -self.CONTEXT :]
            self._last = float(out[0][0])
        return self._last


def load_model(name: str, *, aggressiveness: int = 2, speaking_aggressiveness: int = 2) -> VadModel:
    """A fresh model for one stream: ``webrtc`` or ``silero`` (which has no aggressiveness).
    While the bot speaks, webrtc keeps aggressiveness 2 by default: 3 hears unvoiced onsets
    ("st...") ~100 ms late, which is barge-in latency (the raised noise gate is what makes the
    bot harder to interrupt)."""
    if name == "webrtc":
        return WebRtcVad(aggressiveness, speaking_aggressiveness)
    if name == "silero":
        return SileroVad()
    raise ValueError(f"unknown VAD model {name!r} (webrtc or silero)")
