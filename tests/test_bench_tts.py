"""scripts/bench_tts runs end to end and reports every figure it promises (small run)."""

from __future__ import annotations

from tests.support import bench_json


def test_bench_tts_quick_run_prints_all_figures() -> None:
    data = bench_json("bench_tts.py", "--quick", timeout=115)
    for name in ("short", "medium", "sentence_100"):
        figures = data["first_audio"][name]
        for side in ("duplex_worker", "raw_piper_first_chunk"):
            assert figures[side]["trials"] == 3
            # The median is bounded; with 3 trials p95 is the slowest one, which a single host
            # stall decides (CI once saw 5.1 s), so it is only checked for order.
            assert 0 < figures[side]["p50_ms"] <= figures[side]["p95_ms"] <= figures[side]["max_ms"]
            assert figures[side]["p50_ms"] < 5000
    assert 0 < data["real_time"]["rtf"] < 1  # faster than real time, generously
    for command in ("pause_to_last_frame", "stop_to_last_frame"):
        assert 0 <= data[command]["p50_ms"] <= data[command]["p95_ms"]
        assert data[command]["p50_ms"] < 1000
    # How many streams kept real time is the benchmark's figure (a host with CPU steal gave 0);
    # here: it was tried from one stream up and reported consistently.
    tried = data["concurrent_streams"]
    assert tried and tried[0]["streams"] == 1
    clean = [s["streams"] for s in tried if not s["underruns"]]
    assert data["max_real_time_streams"] == max(clean, default=0)
    assert set(data["targets"]) == {
        "first_audio_100_char_p95_le_120ms",
        "pause_p95_le_30ms",
        "stop_p95_le_30ms",
    }
