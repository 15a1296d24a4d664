"""``duplex say`` with no stack running: a worker starts in-process and the WAV is real speech."""

from __future__ import annotations

from pathlib import Path

from bus.audio_format import BOT, SAMPLE_BYTES, read_wav
from tests.support import duplex, free_port, transcribe, word_error_rate

TEXT = "The weather today is sunny with a light breeze from the west."


def test_say_without_a_stack_writes_intelligible_48k_mono_speech(tmp_path: Path) -> None:
    out = tmp_path / "weather.wav"
    result = duplex("say", TEXT, "--out", str(out), "--broker", f"tcp://127.0.0.1:{free_port()}")
    assert result.returncode == 0, result.stderr
    assert "starting one here" in result.stderr and "a worker started here" in result.stdout
    pcm, rate = read_wav(out)  # refuses anything but mono 16-bit
    samples = len(pcm) // SAMPLE_BYTES
    assert rate == BOT.sample_rate
    assert samples % BOT.frame_samples == 0 and samples / BOT.sample_rate > 2.0
    heard = transcribe(out)
    assert word_error_rate(TEXT, heard) < 0.2, heard


def test_say_reports_an_unknown_voice_with_the_choices(tmp_path: Path) -> None:
    result = duplex("say", "Hi.", "--out", str(tmp_path / "x.wav"), "--voice", "nobody", "--local")
    assert result.returncode == 1
    assert "UNKNOWN_VOICE" in result.stderr and "piper-en_US-joe-medium" in result.stderr
    assert not (tmp_path / "x.wav").exists()


def test_voices_lists_the_shipped_voices() -> None:
    result = duplex("voices")
    assert result.returncode == 0
    assert "* piper-en_US-joe-medium" in result.stdout and "mock-440hz" in result.stdout
