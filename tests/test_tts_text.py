"""Text into speakable units, and the shared path from units to exact 48 kHz frames."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from adapters.tts.base import FrameSlicer, Renderer, SynthesisOptions, TtsEngine
from adapters.tts.piper import FIRST_UNIT_PHONEMES, split_first, split_long
from adapters.tts.text import MAX_UTTERANCE_CHARS, SentenceBuffer, TextError, check_text
from adapters.tts.voicepacks import VoicePack
from bus.audio_format import BOT


def test_sentences_complete_as_streamed_text_arrives() -> None:
    buf = SentenceBuffer()
    assert buf.push("Hello wor") == []
    assert buf.push("ld. Dr. Smith is") == ["Hello world."]
    assert buf.push(" here! How are") == ["Dr. Smith is here!"]
    assert buf.flush() == ["How are"]


def test_control_characters_and_overlong_text_are_refused() -> None:
    assert check_text("tab\tand newline\n ok") == "tab\tand newline\n ok"
    with pytest.raises(TextError) as info:
        check_text("ring \x07 bell")
    assert info.value.code == "INVALID_TEXT" and "U+0007" in str(info.value)
    buf = SentenceBuffer()
    with pytest.raises(TextError) as info:
        for _ in range(MAX_UTTERANCE_CHARS // 1000 + 1):
            buf.push("x" * 1000)
    assert info.value.code == "TEXT_TOO_LONG"


def test_first_unit_is_cut_at_a_clause_mark_or_word_gap() -> None:
    # Phonemes are single symbols with " " between words; plain letters stand in for IPA here.
    words = list("the quick brown fox jumps over the lazy dog and runs far away.")
    head, tail = split_first(words)
    assert 4 <= len(head) <= FIRST_UNIT_PHONEMES and head[-1] != " " and tail[0] != " "
    assert [*head, " ", *tail] == words
    with_comma = list("hello, my friend and all the rest of you here today.")
    head, _ = split_first(with_comma)
    assert head[-1] == ","
    short = list("hello there.")
    assert split_first(short) == ([], short)
    pieces = split_long(list("ab cd, ef gh ij kl mn op qr st"), 10)
    assert all(len(p) <= 10 for p in pieces) and pieces[0][-1] == ","


def test_options_are_validated() -> None:
    assert SynthesisOptions.from_dict({"speed": 1.2}).speed == 1.2
    for bad in ({"speed": 9}, {"loudness_dbfs": 0}, {"pitch": 1}, {"speed": "fast"}):
        with pytest.raises(ValueError):
            SynthesisOptions.from_dict(bad)


class SquareEngine(TtsEngine):
    """Units of constant level: without fades every join would be a full-scale step."""

    def plan(self, text: str, first: bool) -> list[Any]:
        return text.split()

    def render(self, unit: Any, options: SynthesisOptions) -> np.ndarray:
        level = 0.08 if len(unit) % 2 else -0.08
        return np.full(int(0.05 * self.voice.sample_rate), level, dtype=np.float32)


def test_renderer_joins_units_without_clicks_and_slices_exact_frames(tmp_path) -> None:
    voice = VoicePack("sq", "mock", "en_US", 22050, tmp_path)
    engine = SquareEngine(voice)
    engine.reference_rms = 0.08
    renderer = Renderer(engine, SynthesisOptions(loudness_dbfs=-12))
    slicer = FrameSlicer()
    frames = []
    for unit in engine.plan("aa b cc d", True):
        frames += slicer.push(renderer.render(unit))
    frames += slicer.push(renderer.finish())
    tail = slicer.flush()
    assert tail is not None and len(tail) == BOT.frame_bytes
    frames.append(tail)
    assert all(len(f) == BOT.frame_bytes for f in frames)
    audio = np.frombuffer(b"".join(frames), dtype="<i2").astype(np.float32) / 32768
    assert abs(len(audio) / BOT.sample_rate - 4 * 0.05) < 0.03  # 22.05 kHz became 48 kHz
    level = 10 ** (-12 / 20)
    assert np.abs(audio).max() <= 0.99 and np.abs(audio).max() > 0.8 * level
    # Steps of 2 x 0.25 between units become ramps: no sample-to-sample jump near the step.
    assert np.abs(np.diff(audio)).max() < 0.05


def test_render_scheduler_runs_the_most_urgent_render_first() -> None:
    import asyncio
    import threading

    from actors.tts_worker.utterance import RenderScheduler

    async def body() -> list[str]:
        scheduler = RenderScheduler(slots=1)
        order: list[str] = []
        gate = threading.Event()

        def render(name: str) -> str:
            if name == "busy":
                gate.wait(5)
            order.append(name)
            return name

        busy = asyncio.create_task(scheduler.run(0.0, render, "busy"))
        await asyncio.sleep(0.05)  # "busy" holds the only slot
        later = [
            asyncio.create_task(scheduler.run(d, render, n))
            for d, n in ((30.0, "relaxed"), (10.0, "soon"), (20.0, "middle"))
        ]
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(busy, *later)
        return order

    assert asyncio.run(asyncio.wait_for(body(), 10)) == ["busy", "soon", "middle", "relaxed"]


def test_render_scheduler_holds_the_slot_until_a_cancelled_render_thread_ends() -> None:
    """A stopped utterance stops waiting for its render, but the thread runs on: the next
    render must not start beside it, or stopped utterances pile renders onto the cores."""
    import asyncio
    import threading

    from actors.tts_worker.utterance import RenderScheduler

    async def body() -> tuple[bool, list[str], bool]:
        scheduler = RenderScheduler(slots=1)
        running: list[str] = []
        overlapped = False
        gate = threading.Event()

        def render(name: str) -> str:
            nonlocal overlapped
            overlapped = overlapped or bool(running)
            running.append(name)
            if name == "stopped":
                gate.wait(5)
            running.remove(name)
            return name

        stopped = asyncio.create_task(scheduler.run(0.0, render, "stopped"))
        await asyncio.sleep(0.05)
        stopped.cancel()  # its utterance was stopped mid-render
        await asyncio.gather(stopped, return_exceptions=True)
        nxt = asyncio.create_task(scheduler.run(1.0, render, "next"))
        await asyncio.sleep(0.1)
        started_early = not nxt.done() and "next" in running
        gate.set()
        await nxt
        await asyncio.sleep(0.05)
        return started_early or overlapped, running, scheduler.idle

    overlapped, running, idle = asyncio.run(asyncio.wait_for(body(), 10))
    assert not overlapped, "a render started while a cancelled one still ran"
    assert running == [] and idle
