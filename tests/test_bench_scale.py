"""scripts/bench_scale --quick runs every part end to end and reports figures that hang together
(no targets here: the figures are the benchmark's). What is checked is that it counts honestly:
the proxy's delivered messages are ones a subscriber really took, a gateway's sessions count as
held only when whole, and every question is either answered or counted unanswered, with the
ASR's time split from its own logs."""

from __future__ import annotations

import pytest

from tests.support import bench_json


@pytest.mark.timeout(300)
def test_bench_scale_quick_run_counts_what_it_claims() -> None:
    data = bench_json("bench_scale.py", "--quick", timeout=290)
    (proxy,) = data["proxy"]["sessions"].values()
    assert proxy["sessions"] == 20 and proxy["messages_per_s_offered"] == 1000
    # 3 s of 20 sessions at 50 frames/s, taken whole by the subscriber on loopback.
    assert 2700 <= proxy["sent"] <= 3100 and proxy["delivered"] == proxy["sent"]
    assert proxy["delivered_ratio"] == 1.0 and 0 < proxy["broker_cpu_pct"] < 90
    assert data["proxy"]["saturates_at"] is None

    (gateway,) = data["gateway"]["sessions"].values()
    assert gateway["sessions"] == 3 and gateway["failed"] == 0
    assert gateway["sessions_with_audio"] == 3 and gateway["frames"] > 3 * 100
    assert gateway["held"] is (
        gateway["whole"] == 3 and gateway["underruns"] == 0 and gateway["jitter"]["p95_ms"] <= 5
    )
    assert data["gateway"]["held"] == (3 if gateway["held"] else 0)

    two = data["voice"]["configs"]["1x1"]["2"]
    assert two["asked"] == 2
    assert two["unanswered"] == 2 - two["voice_to_voice"]["samples"]
    assert two["unanswered"] == sum(two["errors"].values())
    # One final per question, each split into compute and the wait behind other recognitions.
    assert two["asr_after_end"]["samples"] == two["asr_compute"]["samples"] == 2
    assert two["asr_queue_wait"]["samples"] == 2
    assert 0 < two["asr_compute"]["p50_ms"] < 5000
