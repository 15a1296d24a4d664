"""scripts/bench_wyoming runs end to end and reports every figure it promises (a small run of
Duplex alone: the reference servers' packages are not installed in CI)."""

from __future__ import annotations

from tests.support import bench_json


def test_bench_wyoming_quick_run_prints_all_figures() -> None:
    data = bench_json("bench_wyoming.py", "--quick", timeout=115)
    tts = data["tts"]["duplex"]
    for length in ("chars_30", "chars_70", "chars_100"):
        figures = tts[length]
        assert figures["samples"] == 4
        assert 0 < figures["p50_ms"] <= figures["p95_ms"] <= figures["max_ms"] < 10_000
    assert 20 < tts["chars_30"]["chars"] < 40 and 90 < tts["chars_100"]["chars"] < 110
    assert tts["chars_100_four_clients"]["samples"] == 4  # four clients at once, one round
    assert tts["four_clients_p95_over_alone_p95"] > 0
    asr = data["asr"]["duplex"]
    assert asr["samples"] == 2 and 0 < asr["p50_ms"] < 10_000
    assert 0 <= asr["word_error_rate"] < 0.5  # Piper's clear voice, tiny.en: words heard
    assert set(data["met"]) == {"four_clients_p95_within_2x_alone"}  # no baseline: no ratios
    assert "wyoming_piper" not in data["tts"]
