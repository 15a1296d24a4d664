"""scripts/bench_voice runs end to end and reports figures that hang together (small run).

No timing targets here (a 2-trial run on a shared host proves none): what is checked is that
every trial was answered and measured, that the summaries are consistent, that ``met`` is the
comparison it claims, and that each barge-in really silenced the bot."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import bench_json

TRIALS = 2


def assert_ordered(figures: dict[str, Any], unit: str = "ms") -> None:
    assert 0 <= figures[f"p50_{unit}"] <= figures[f"p95_{unit}"] <= figures[f"max_{unit}"], figures


@pytest.mark.timeout(200)
def test_bench_voice_quick_run_answers_measures_and_silences_the_bot_in_every_trial() -> None:
    data = bench_json("bench_voice.py", "--trials", str(TRIALS), timeout=190)
    assert data["trials"] == TRIALS
    for kind, quantile, target in (
        ("barge_in", "p95_ms", "target_p95_ms"),
        ("voice_to_voice", "p50_ms", "target_p50_ms"),
    ):
        figures = data[kind]
        assert figures["samples"] == figures["server_side"]["samples"] == TRIALS, figures
        assert figures["server_measured"] == TRIALS, figures  # the gateway timed every one
        assert_ordered(figures)
        assert_ordered(figures["server_side"])
        assert figures["p50_ms"] > 0, figures
        assert figures["met"] is (figures[quantile] <= figures[target]), figures

    barge = data["barge_in"]
    # A broken barge-in (never held, resumed as a false interruption, or cut for the wrong
    # reason) still has a latency; these are what it cannot fake.
    assert barge["ended_barged_in"] == TRIALS, barge
    assert barge["spoke_over"] == 0 and barge["frames_after_hold_max"] == 0, barge

    wer = data["asr_wer"]
    assert wer["words"] > 5
    assert 0 <= wer["stack"] < 0.5 and 0 <= wer["offline_faster_whisper"] < 0.5, wer
    for engine in ("stack_auto_context", "offline_faster_whisper"):
        seconds = data["asr_seconds_per_question"][engine]
        assert seconds["samples"] == TRIALS, seconds
        assert_ordered(seconds)
        assert seconds["p50_ms"] > 0, seconds
    assert len(data["misheard"]) <= TRIALS
    assert data["machine"]["cpus"] >= 1
