"""The audio format every part of Duplex agrees on, and the one WAV reader/writer.

Microphone audio travels the bus as 16 kHz mono PCM s16le in 20 ms frames (VAD and ASR count
stream time in these samples); bot audio leaves TTS workers as 48 kHz mono PCM s16le in 20 ms
frames, which is also what clients receive. Everything else derives from these constants.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from pathlib import Path

FRAME_MS = 20
"""Every audio frame on the bus and to clients, milliseconds."""
FRAME_S = FRAME_MS / 1000
SAMPLE_BYTES = 2
"""PCM s16le."""


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """Mono PCM s16le at ``sample_rate`` in ``FRAME_MS`` frames."""

    sample_rate: int
    """Hertz."""

    @property
    def frame_samples(self) -> int:
        return self.sample_rate * FRAME_MS // 1000

    @property
    def frame_bytes(self) -> int:
        return self.frame_samples * SAMPLE_BYTES

    def ms(self, samples: int) -> float:
        """Milliseconds that ``samples`` samples last."""
        return 1000.0 * samples / self.sample_rate

    def samples(self, ms: float) -> int:
        """Samples in ``ms`` milliseconds (rounded)."""
        return round(ms * self.sample_rate / 1000)


MIC = AudioFormat(16_000)
"""The person's audio on the bus: what VAD and ASR hear, and what stream time counts."""
BOT = AudioFormat(48_000)
"""The bot's audio: TTS worker frames, and what clients are sent."""
INPUT_RATES = (16_000, 48_000)
"""Microphone rates a client may send (the gateway resamples 48 kHz to :data:`MIC`)."""


def wav_bytes(pcm: bytes, sample_rate: int = BOT.sample_rate) -> bytes:
    """A mono 16-bit WAV file holding ``pcm``."""
    out = io.BytesIO()
    write_wav(out, pcm, sample_rate)
    return out.getvalue()


def write_wav(
    target: str | Path | io.BytesIO, pcm: bytes, sample_rate: int = BOT.sample_rate
) -> None:
    """Write ``pcm`` (mono s16le) as a WAV file to a path or a binary buffer."""
    dest = str(target) if isinstance(target, Path) else target
    with wave.open(dest, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(SAMPLE_BYTES)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)


def read_wav(source: str | Path | io.BytesIO) -> tuple[bytes, int]:
    """(pcm, sample_rate) of a mono 16-bit WAV file; ValueError for any other layout."""
    src = str(source) if isinstance(source, Path) else source
    with wave.open(src) as wav:
        if wav.getnchannels() != 1 or wav.getsampwidth() != SAMPLE_BYTES:
            raise ValueError("expected a mono 16-bit WAV file")
        return wav.readframes(wav.getnframes()), wav.getframerate()
