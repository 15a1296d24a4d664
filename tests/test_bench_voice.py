"""scripts/bench_voice runs end to end and reports every figure it promises (small run)."""

from __future__ import annotations

import pytest

from tests.support import bench_json


@pytest.mark.timeout(200)
def test_bench_voice_quick_run_prints_all_figures() -> None:
    data = bench_json("bench_voice.py", "--trials", "2", timeout=190)
    for kind in ("barge_in", "voice_to_voice"):
        assert data[kind]["samples"] == 2 and data[kind]["server_side"]["samples"] == 2
        assert 0 < data[kind]["p50_ms"] <= data[kind]["max_ms"]
        assert data[kind]["p50_ms"] < 10_000  # the mean of 2 samples; one can be a host stall
        assert isinstance(data[kind]["met"], bool)
    wer = data["asr_wer"]
    assert wer["words"] > 5 and 0 <= wer["stack"] < 0.5 and 0 <= wer["offline_faster_whisper"] < 0.5
    assert data["machine"]["cpus"] >= 1
