"""scripts/bench_tts_memory runs both modes and reports RSS samples for each (small run)."""

from __future__ import annotations

from pathlib import Path

from tests.support import bench_json


def test_bench_tts_memory_small_run_reports_both_modes() -> None:
    data = bench_json("bench_tts_memory.py", "--texts", "12", "--every", "4", timeout=115)
    for mode, pattern in (("worker", False), ("pattern", True)):
        run = data[mode]
        assert run["memory_pattern"] is pattern and run["texts"] == 12
        samples = run["rss_mib_samples"]
        assert len(samples) == 4 and all(s > 50 for s in samples)  # loaded, then every 4 texts
        assert run["rss_mib_end"] == samples[-1]
        assert run["growth_after_first_sample_mib"] == round(samples[-1] - samples[1], 1)


def test_the_piper_engine_runs_without_the_memory_pattern() -> None:
    """What keeps the worker's memory flat over texts of new lengths (bench_tts_memory)."""
    from adapters.tts.piper import PiperEngine
    from adapters.tts.voicepacks import load_voicepack

    voice = Path(__file__).resolve().parent.parent / "voicepacks" / "piper-en_US-joe-medium"
    engine = PiperEngine(load_voicepack(voice))
    assert engine.model.session.get_session_options().enable_mem_pattern is False
