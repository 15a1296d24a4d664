"""scripts/bench_tts_params compares voice pack settings on the real voice (small run)."""

from __future__ import annotations

import subprocess
import sys

from tests.support import ROOT, bench_json


def test_each_setting_reaches_the_engine_and_is_measured_beside_raw_piper() -> None:
    data = bench_json(
        "bench_tts_params.py",
        "--texts",
        "2",
        "--repeats",
        "1",
        "--settings",
        '{"default": {}, "alone": {"context_words": 0}}',
        timeout=110,
    )
    assert (data["sentences"], data["renderings"]) == (2, 2)
    assert 0 <= data["raw_piper_wer"] <= 1
    default, alone = data["settings"]["default"], data["settings"]["alone"]
    assert alone["params"] == {"context_words": 0}
    for setting in (default, alone):
        assert 0 <= setting["wer"] <= 1
        assert setting["wer_difference"]["standard_error"] is not None
        assert 0 < setting["first_unit"]["p50_ms"] <= setting["first_unit"]["max_ms"] < 5000
        assert setting["first_unit"]["trials"] == 2
    # Units read alone are read as phrases of their own: longer, with pauses between them
    # (16 % longer on bench_tts's 30 sentences). Were the params not applied, the two would
    # be the same path.
    assert alone["duration_ratio_total"] > default["duration_ratio_total"] + 0.05
    assert alone["inserted_silence_max_ms"] > default["inserted_silence_max_ms"]


def test_settings_that_are_not_an_object_of_objects_are_refused() -> None:
    for bad in ("[1]", '{"x": 3}', "not json"):
        result = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "bench_tts_params.py"), "--settings", bad],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 2, (bad, result.stderr)
        assert "--settings" in result.stderr
