"""scripts/bench_bus runs end to end and reports every figure it promises (small run)."""

from __future__ import annotations

from typing import Any

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
    assert_codec_section(data["codec"], iterations=1000, hop_trials=200)


def assert_codec_section(codec: dict[str, Any], iterations: int, hop_trials: int) -> None:
    """The codec section: every side on every message, the same wire bytes, figures in order."""
    measured = {"audio.frame", "tts.frame", "heartbeat", "tts.start"}
    assert set(codec["wire"]) == set(codec["roundtrip_us"]) == set(codec["hop_us"]) == measured
    for type_, checks in codec["wire"].items():
        assert checks == {"same_bytes_as_msgpack": True, "decodes_msgpack_frames": True}, type_
    sides = ("runtime", "msgspec_unvalidated", "msgpack_unvalidated")
    for type_, figures_by_side in codec["roundtrip_us"].items():
        for side in sides:
            figures = figures_by_side[side]
            assert figures["samples"] == iterations, (type_, side)
            assert 0 < figures["p50_us"] <= figures["max_us"], (type_, side, figures)
            assert 0 < figures["mean_us"] <= figures["max_us"], (type_, side, figures)
        assert "validation_costs_p50_us" in figures_by_side
    for type_, figures_by_side in codec["hop_us"].items():
        for side in (*sides, "no_codec"):
            figures = figures_by_side[side]
            assert figures["samples"] == 2 * hop_trials, (type_, side)  # two legs a ping-pong
            assert 0 < figures["p50_us"] <= figures["p99_us"] <= figures["max_us"], figures
        assert "validation_costs_p50_us" in figures_by_side
