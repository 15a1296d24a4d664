"""scripts/bench_tts_memory runs its three modes and reports RSS samples for each (small run);
the engine gives back the memory of its largest inference."""

from __future__ import annotations

from pathlib import Path

from tests.support import bench_json, rss_mib


def test_bench_tts_memory_small_run_reports_each_mode() -> None:
    data = bench_json("bench_tts_memory.py", "--texts", "12", "--every", "4", timeout=115)
    modes = {"worker": (False, True), "arena_kept": (False, False), "pattern": (True, False)}
    for mode, (pattern, shrinkage) in modes.items():
        run = data[mode]
        assert run["memory_pattern"] is pattern and run["arena_shrinkage"] is shrinkage
        assert run["texts"] == 12 and run["render_seconds"] > 0
        samples = run["rss_mib_samples"]
        assert len(samples) == 4 and all(s > 50 for s in samples)  # loaded, then every 4 texts
        assert run["rss_mib_end"] == samples[-1]
        assert run["growth_after_first_sample_mib"] == round(samples[-1] - samples[1], 1)
    # The longest unit at half speed: held by a kept arena, given back by the worker's.
    assert data["arena_kept"]["rss_mib_after_longest_unit"] > data["worker"]["rss_mib_end"] + 150


def test_the_piper_engine_gives_back_the_memory_of_its_largest_inference() -> None:
    """The longest unit at the slowest speed is the worker's largest inference; ONNX Runtime's
    arena kept it for good (+290 MiB) before its regions were freed after every run, and glibc
    kept those in its heap before large blocks had pages of their own."""
    from adapters.tts.base import CALIBRATION_TEXT, SynthesisOptions, tune_malloc
    from adapters.tts.piper import MAX_UNIT_PHONEMES, PiperEngine, Unit
    from adapters.tts.voicepacks import load_voicepack

    tune_malloc()  # as the worker does at its start

    voice = Path(__file__).resolve().parent.parent / "voicepacks" / "piper-en_US-joe-medium"
    engine = PiperEngine(load_voicepack(voice))
    engine.warmup()
    assert engine.model.session.get_session_options().enable_mem_pattern is False
    phonemes = [p for sentence in engine.model.phonemize(CALIBRATION_TEXT) for p in sentence]
    longest = tuple((phonemes * MAX_UNIT_PHONEMES)[:MAX_UNIT_PHONEMES])
    before = rss_mib()
    for body in (longest, longest[:-1]):  # two lengths: each a new block from the heap
        unit = Unit((), body, ())
        audio = engine.render(unit, SynthesisOptions(speed=0.5))
        assert len(audio) > 15 * engine.voice.sample_rate  # it is long: about 19 s of speech
    # Kept by the arena: +290 MiB; freed to glibc's heap without a fixed mmap threshold: +48.
    assert rss_mib() - before < 25


def test_loading_a_voice_keeps_no_copy_of_its_model() -> None:
    """The model, with its durations exposed, reaches onnxruntime as bytes, which the session
    kept for good: a medium voice loaded for 150 MiB, 90 without that copy (2026-12-03). Before
    the other tests here that load a voice: freed memory reused would hide it."""
    from adapters.tts.piper import PiperEngine
    from adapters.tts.voicepacks import load_voicepack

    voice = Path(__file__).resolve().parent.parent / "voicepacks" / "piper-en_US-joe-medium"
    before = rss_mib()
    engine = PiperEngine(load_voicepack(voice))
    assert engine.context_words > 0  # the durations are there: the model came as bytes
    assert rss_mib() - before < 120  # only where no voice loaded in this process before
    assert getattr(engine.model.session, "_model_bytes", None) is None


def test_phonemizing_leaks_nothing_per_text() -> None:
    """Piper's bridge keeps every clause tuple it returns (about 0.2 KiB a clause): these
    20 000 texts of four clauses grew the engine 18.7 MiB, 3.5 with the clauses given back
    (2026-12-03, this machine). Setting the espeak voice leaks too (26 MiB over 20 000 calls
    alone); the engine sets it only when it changes."""
    from adapters.tts.piper import PiperEngine
    from adapters.tts.voicepacks import load_voicepack

    voice = Path(__file__).resolve().parent.parent / "voicepacks" / "piper-en_US-joe-medium"
    engine = PiperEngine(load_voicepack(voice))
    for i in range(200):
        engine.plan(f"Warm up, number {i}; it goes on, and ends.", first=False)
    before = rss_mib()
    for i in range(20_000):
        engine.plan(f"Session {i % 6}, sentence {i}; it goes on, and on.", first=True)
    assert rss_mib() - before < 8  # see the figures in the docstring
