"""A loudspeaker next to the microphone, for the echo tests and scripts/bench_echo: the bot's
audio as a client plays it, back into that client's microphone through a simulated room
(delay, attenuation, a reverberant tail, a noise floor, a sound card's clock drift), with a
second voice (espeak-ng, not the bot's Piper voice) for the person who talks over it."""

from __future__ import annotations

import io
import shutil
import subprocess
import threading
import time
import wave
from collections import deque
from typing import Any

import numpy as np
import soxr
from scipy.signal import fftconvolve

from bus.audio_format import BOT, MIC
from tests.voicekit import Talker

RATE = MIC.sample_rate
FRAME = MIC.frame_samples


def espeak_missing_reason() -> str | None:
    if shutil.which("espeak-ng"):
        return None
    return (
        "espeak-ng is missing: scripts/setup --dev installs it as root (apt-get install espeak-ng)"
    )


def other_voice(text: str, dbfs: float = -26.0, voice: str = "en-us+f3") -> bytes:
    """``text`` spoken by espeak-ng (a voice unlike the bot's), 16 kHz s16le at ``dbfs`` RMS."""
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", "150", "--stdout", text],
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout
    with wave.open(io.BytesIO(wav)) as w:
        rate, raw = w.getframerate(), w.readframes(w.getnframes())
    audio = soxr.resample(np.frombuffer(raw, "<i2").astype(np.float32), rate, RATE)
    audio *= 32768 * 10 ** (dbfs / 20) / max(1.0, float(np.sqrt(np.mean(audio**2))))
    return np.clip(audio, -32768, 32767).astype("<i2").tobytes()


class Room:
    """The acoustic path from a client's loudspeaker to its microphone, 20 ms at a time."""

    def __init__(
        self,
        gain_db: float,
        delay_ms: float,
        *,
        tail_s: float = 0.2,
        noise_dbfs: float = -60.0,
        drift_ppm: float = 0.0,
        seed: int = 0,
    ) -> None:
        rng = np.random.default_rng(seed)
        n = int(tail_s * RATE)
        # A direct path, then exponentially decaying reflections (RT60 = tail_s) carrying a
        # tenth of its energy (-10 dB): the echo's level is about ``gain_db``.
        tail = rng.standard_normal(n) * np.exp(-6.9 * np.arange(n) / max(n, 1))
        tail[0] = 0.0
        tail *= np.sqrt(0.1 / max(float(np.dot(tail, tail)), 1e-12))
        tail[0] = 1.0
        self.response = np.concatenate([np.zeros(int(delay_ms * RATE / 1000)), tail])
        self.response *= 10 ** (gain_db / 20)
        self.noise = 32768 * 10 ** (noise_dbfs / 20)
        self._rng = rng
        self._history = np.zeros(len(self.response) - 1)
        self._drift = (
            soxr.ResampleStream(RATE, RATE * (1 + drift_ppm * 1e-6), 1, dtype="float64")
            if drift_ppm
            else None
        )
        self._drifted: deque[float] = deque()

    def frame(self, played: np.ndarray) -> np.ndarray:
        """What the microphone hears (float, int16 scale) while ``played`` (one frame) plays."""
        x = played.astype(np.float64)
        if self._drift is not None:  # the sound card's clock: its samples come a little faster
            self._drifted.extend(self._drift.resample_chunk(x))
            x = np.array([self._drifted.popleft() if self._drifted else 0.0 for _ in range(FRAME)])
        signal = np.concatenate([self._history, x])
        self._history = signal[len(x) :]
        echo = fftconvolve(signal, self.response, mode="valid")
        return np.asarray(echo + self._rng.standard_normal(len(echo)) * self.noise)


class EchoTalker(Talker):
    """A WebSocket client with a loudspeaker and a microphone in one room: it plays the bot's
    audio as it arrives (dropping what is unplayed on ``barge_in``, as the protocol asks), and
    its microphone streams, every 20 ms from connect to close, what the room makes of it plus
    whatever :meth:`speak` gives it to say."""

    def __init__(self, url: str, room: Room, **config: Any) -> None:
        self.room = room
        self._speaker: deque[np.ndarray] = deque()
        self._heard = np.zeros(0, np.int16)
        self._resampler = soxr.ResampleStream(BOT.sample_rate, RATE, 1, dtype="int16")
        self._voice: deque[np.ndarray] = deque()
        self._running = True
        super().__init__(url, **config)
        self._mic = threading.Thread(target=self._microphone, daemon=True)
        self._mic.start()

    def _received(self, item: Any) -> None:
        if isinstance(item, bytes):
            self._play(item)
        elif item.get("type") == "barge_in":
            self._speaker.clear()  # the unplayed bot audio is dropped

    def _play(self, pcm: bytes) -> None:
        samples = self._resampler.resample_chunk(np.frombuffer(pcm, "<i2"))
        self._heard = np.concatenate([self._heard, samples])
        while len(self._heard) >= FRAME:
            self._speaker.append(self._heard[:FRAME])
            self._heard = self._heard[FRAME:]

    def speak(self, pcm: bytes) -> float:
        """The person says ``pcm`` (16 kHz s16le) from the next frame on; returns when."""
        samples = np.frombuffer(pcm, "<i2")
        with self._lock:
            for i in range(0, len(samples), FRAME):
                self._voice.append(samples[i : i + FRAME])
        return time.monotonic()

    @property
    def speaking(self) -> bool:
        with self._lock:
            return bool(self._voice)

    def _microphone(self) -> None:
        start, n = time.monotonic(), 0
        while self._running:
            time.sleep(max(0.0, start + n * FRAME / RATE - time.monotonic()))
            n += 1
            with self._lock:
                played = self._speaker.popleft() if self._speaker else np.zeros(FRAME, np.int16)
                voice = self._voice.popleft() if self._voice else None
            mic = self.room.frame(played)
            if voice is not None:
                mic[: len(voice)] += voice
            try:
                self.ws.send(np.clip(mic, -32768, 32767).astype("<i2").tobytes())
            except Exception:
                return

    def close(self) -> None:
        self._running = False
        self._mic.join(timeout=5)
        super().close()
