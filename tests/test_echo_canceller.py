"""transports/echo.py on its own: the bot's voice (Piper) played on a simulated clock, back
through a simulated room into the microphone, with the person's voice (espeak-ng) over it."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import soxr

from tests.roomkit import Room, espeak_missing_reason, other_voice
from tests.voicekit import speech
from transports.echo import EchoCanceller, Timeline

RATE = 16_000
FRAME = 320
START = 1000.0  # the simulated monotonic clock at the first frame
BOT_TEXT = (
    "Once upon a time there was a lighthouse keeper who counted the waves every night. "
    "He wrote each number into a big blue book, and he never missed a single wave."
)


@cache
def bot() -> np.ndarray:
    return np.frombuffer(speech(BOT_TEXT), "<i2")


def needs_espeak() -> None:
    reason = espeak_missing_reason()
    if reason:
        pytest.skip(reason)


def run(
    room: Room,
    person: bytes = b"",
    person_at_s: float = 0.0,
    *,
    burst: int = 1,
    jitter_s: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, EchoCanceller]:
    """Play the bot through ``room`` while the person says ``person``; returns the microphone's
    input, the canceller's output, and the person's voice alone, frame-aligned. The microphone
    comes in chunks of ``burst`` frames, each up to ``jitter_s`` late (uniformly)."""
    rng = np.random.default_rng(7)
    far = bot()
    far48 = soxr.resample(far.astype(np.float32), RATE, 48_000).clip(-32768, 32767)
    far48 = far48.astype("<i2")
    voice = np.zeros(len(far))
    at = int(person_at_s * RATE)
    own = np.frombuffer(person, "<i2")[: max(0, len(far) - at)]
    voice[at : at + len(own)] = own
    canceller = EchoCanceller()
    frames = len(far) // FRAME
    mic_in, mic_out, chunk = [], [], []
    for k in range(frames):
        # Frame k is sent at START + 20 ms * k; the microphone frame that hears it comes after.
        canceller.played(far48[k * 960 : (k + 1) * 960].tobytes(), START + k * 0.02)
        heard = room.frame(far[k * FRAME : (k + 1) * FRAME])
        mic = np.clip(heard + voice[k * FRAME : (k + 1) * FRAME], -32768, 32767).astype("<i2")
        mic_in.append(mic)
        chunk.append(mic.tobytes())
        if len(chunk) == burst:  # the chunk arrives: its last sample captured "now"
            arrived = START + (k + 1) * 0.02 + rng.uniform(0, jitter_s)
            ends = [arrived - (burst - 1 - i) * 0.02 for i in range(burst)]
            out = canceller.cancel_frames(chunk, ends)
            mic_out += [np.frombuffer(pcm, "<i2") for pcm in out]
            chunk = []
    frames = len(mic_out)
    mic_in = mic_in[:frames]
    return np.concatenate(mic_in), np.concatenate(mic_out), voice, canceller


def db(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(10 * np.log10(np.dot(a, a) / max(np.dot(b, b), 1.0)))


def test_the_bots_voice_through_a_room_is_cancelled() -> None:
    mic, out, _, canceller = run(Room(-6, 150))
    last = slice(len(mic) - 3 * RATE, len(mic))
    assert canceller.path.heard is True
    assert db(out[last], mic[last]) < -25  # the echo, 25 dB down and more once converged
    erle = canceller.erle_db()
    assert erle is not None and erle > 15


def test_the_echo_is_cancelled_when_the_microphone_comes_late_and_in_bursts() -> None:
    """Chunks of 100 ms, each up to 60 ms late: the reference is still read as one stream (each
    read placed by its own chunk's arrival, AEC3 would hardly cancel anything)."""
    mic, out, _, canceller = run(Room(-6, 150), burst=5, jitter_s=0.06)
    last = slice(len(out) - 3 * RATE, len(out))
    assert canceller.path.heard is True
    assert db(out[last], mic[last]) < -25


def test_with_no_echo_the_persons_voice_passes_untouched() -> None:
    """A headset: the canceller, with no echo to learn, would eat the person's voice for
    seconds; once the path is known to carry none, the microphone goes through as it came."""
    needs_espeak()
    person = other_voice("Stop please, I have a question for you.")
    mic, out, _, canceller = run(Room(-120, 150, noise_dbfs=-70), person, person_at_s=2.0)
    assert canceller.path.heard is False
    start, stop = 2 * RATE, 2 * RATE + len(person) // 2
    assert np.array_equal(out[start + 128 : stop], mic[start : stop - 128])  # 8 ms late, as AEC3
    assert canceller.erle_db() is None


def test_the_person_talking_over_the_echo_comes_through() -> None:
    needs_espeak()
    person = other_voice("Stop please, I have a question for you.")
    mic, out, voice, canceller = run(Room(-6, 150), person, person_at_s=4.0)
    assert canceller.path.heard is True
    spoken = slice(4 * RATE, 4 * RATE + len(person) // 2)
    # Double talk: the echo is gone and the person's voice is kept (AEC3 trims it a few dB).
    assert db(out[spoken], voice[spoken]) > -10
    assert db(mic[spoken] - voice[spoken], voice[spoken]) > -3  # there was loud echo to remove


def test_the_reference_timeline_reads_silence_where_nothing_played() -> None:
    line = Timeline(size=1000)
    line.write(100, np.arange(1, 11, dtype=np.int16))
    assert line.read(95, 20).tolist() == [0] * 5 + list(range(1, 11)) + [0] * 5
    line.write(200, np.full(5, 7, np.int16))  # a gap between: silence
    assert line.read(105, 100).tolist() == list(range(6, 11)) + [0] * 90 + [7] * 5
    line.erase_from(202)  # a barge-in took back what was to play from here
    assert line.read(200, 5).tolist() == [7, 7, 0, 0, 0]
    line.write(5000, np.ones(3, np.int16))  # long after: the old samples are gone
    assert not line.read(100, 200).any() and line.read(5000, 3).tolist() == [1, 1, 1]
