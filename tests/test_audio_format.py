"""The one audio format: the figures docs/protocol.md promises clients, stated once here (every
other module and test derives them from bus.audio_format), and the one WAV reader/writer."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import pytest

from bus.audio_format import (
    BOT,
    FRAME_MS,
    FRAME_S,
    INPUT_RATES,
    MIC,
    read_wav,
    wav_bytes,
    write_wav,
)


def test_the_bus_and_client_formats_are_the_documented_ones() -> None:
    assert (FRAME_MS, FRAME_S) == (20, 0.02)
    assert (MIC.sample_rate, MIC.frame_samples, MIC.frame_bytes) == (16_000, 320, 640)
    assert (BOT.sample_rate, BOT.frame_samples, BOT.frame_bytes) == (48_000, 960, 1920)
    assert INPUT_RATES == (16_000, 48_000)
    assert MIC.ms(4_800) == 300.0 and MIC.samples(300) == 4_800


def test_a_wav_written_to_a_path_or_a_buffer_reads_back_as_written(tmp_path: Path) -> None:
    pcm = bytes(range(256)) * 10
    write_wav(tmp_path / "a.wav", pcm, MIC.sample_rate)
    assert read_wav(tmp_path / "a.wav") == (pcm, MIC.sample_rate)
    assert read_wav(str(tmp_path / "a.wav")) == (pcm, MIC.sample_rate)
    assert read_wav(io.BytesIO(wav_bytes(pcm))) == (pcm, BOT.sample_rate)  # BOT by default
    with wave.open(io.BytesIO(wav_bytes(pcm, 22_050))) as wav:  # an ordinary WAV file
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 22_050)


@pytest.mark.parametrize(("channels", "width"), [(2, 2), (1, 1)])
def test_read_wav_refuses_what_is_not_mono_16_bit(channels: int, width: int) -> None:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(16_000)
        wav.writeframes(bytes(4 * channels * width))
    with pytest.raises(ValueError, match="mono 16-bit"):
        read_wav(io.BytesIO(out.getvalue()))
