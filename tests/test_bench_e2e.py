"""scripts/bench_e2e runs end to end and reports every figure it promises (small run)."""

from __future__ import annotations

from tests.support import bench_json


def test_bench_e2e_quick_run_prints_all_figures() -> None:
    data = bench_json("bench_e2e.py", "--quick", timeout=115)
    assert data["first_audio"]["samples"] == 3
    assert 0 < data["first_audio"]["p50_ms"] < 5000
    for count in ("1", "2"):
        run = data["pacing"][count]
        assert run["sessions_with_audio"] == int(count) and run["frames"] > 50
        assert 0 <= run["jitter"]["p95_ms"] < 500  # a slow host: 110 ms seen; the target is
        # scripts/bench_e2e's (p95 <= 5 ms at 10 sessions), not this smoke test's
    for command in ("pause_to_last_frame", "stop_to_last_frame"):
        assert data[command]["samples"] == 3  # p95 of 3 is the slowest: a host stall decides it
        assert 0 <= data[command]["p50_ms"] <= data[command]["p95_ms"]
        assert data[command]["p50_ms"] < 1000
    assert set(data["targets"]) == {
        "first_audio_p95_le_200ms",
        "jitter_p95_le_5ms_no_underruns_at_10",
        "pause_p95_le_30ms",
        "stop_p95_le_30ms",
    }
