"""scripts/bench_bus runs end to end and reports every figure it promises (small run)."""

from __future__ import annotations

from tests.support import bench_json


def test_bench_bus_quick_run_prints_all_figures() -> None:
    data = bench_json("bench_bus.py", "--quick", timeout=110)
    for path in ("hop_proxy", "hop_direct"):
        for side in ("duplex", "raw_pyzmq"):
            figures = data[path][side]
            assert figures["samples"] == 400
            assert 0 < figures["p50_us"] <= figures["p99_us"] <= figures["max_us"]
            assert figures["p99_us"] < 50_000  # generous: timing targets live in the benchmark
        assert data[path]["ratio_p99"] > 0
    assert data["echo_msgs_per_s_via_proxy"] > 100
    restart = data["broker_restart"]
    assert restart["actors"] == 2
    assert restart["all_reregistered_after_broker_up_s"] < 10
    assert set(data["targets"]) == {
        "hop_p99_under_1ms",
        "within_1_5x_raw_p99",
        "reregistered_within_2_heartbeats",
    }
