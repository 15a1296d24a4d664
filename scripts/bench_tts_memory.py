"""TTS memory benchmark: a Piper engine's RSS over texts of ever-new lengths, as the worker
loads it, beside the two ways ONNX Runtime held on to memory before.

- ``worker``: as adapters/tts/piper.py loads it: no memory pattern, the CPU arena frees its
  unused regions after every inference, and glibc maps blocks of 1 MiB and more on their own
  pages (so the freed regions leave the process instead of fragmenting its heap).
- ``arena_kept``: the arena keeps what it has grown to (ONNX Runtime's default): the worker's
  memory stays at the largest inference it has run (the worker before 2026-12-02 14:00).
- ``pattern``: the arena kept and the memory pattern on (the default): a layout is planned and
  kept for each input shape, and every text length is a new shape.

Halfway through, each renders the longest unit (MAX_UNIT_PHONEMES) at the slowest speed (0.5),
the largest inference the worker runs. The three run at once, each in its own process, on the
same texts (a fixed seed), so their render times compare side by side; RSS is sampled every
``--every`` texts. Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.support import rss_mib  # noqa: E402

VOICE = ROOT / "voicepacks" / "piper-en_US-joe-medium"
WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "seven",
    "bright",
    "stars",
    "shine",
]


def log(line: str) -> None:
    print(f"bench_tts_memory: {line}", file=sys.stderr, flush=True)


MODES = ("worker", "arena_kept", "pattern")


def measure(mode: str, texts: int, every: int) -> dict[str, Any]:
    """In this process: load the engine as ``mode`` says, render ``texts`` texts, sample RSS."""
    import onnxruntime

    import adapters.tts.piper as piper
    from adapters.tts.base import CALIBRATION_TEXT, SynthesisOptions, tune_malloc

    if mode == "worker":  # as the worker process runs: glibc tuned at its start
        tune_malloc()
    else:  # arena kept: runs without the shrinkage option, glibc as it comes
        piper.RUN_OPTIONS = onnxruntime.RunOptions()
    if mode == "pattern":  # undo the engine's ``enable_mem_pattern = False``

        class WithPattern(onnxruntime.SessionOptions):  # type: ignore[misc]
            def __setattr__(self, name: str, value: Any) -> None:
                super().__setattr__(name, True if name == "enable_mem_pattern" else value)

        onnxruntime.SessionOptions = WithPattern  # type: ignore[misc]

    from adapters.tts.voicepacks import load_voicepack

    engine = piper.PiperEngine(load_voicepack(VOICE))
    phonemes = [p for sentence in engine.model.phonemize(CALIBRATION_TEXT) for p in sentence]
    longest = piper.Unit(
        (), tuple((phonemes * piper.MAX_UNIT_PHONEMES)[: piper.MAX_UNIT_PHONEMES]), ()
    )
    rng = random.Random(1)
    samples = [round(rss_mib(), 1)]
    rendering = 0.0
    peak = samples[0]
    for i in range(texts):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30)))
        started = time.perf_counter()
        for unit in engine.plan(f"{words} {i}.", first=i % 3 == 0):  # unique: no cache hits
            engine.render(unit, SynthesisOptions())
        rendering += time.perf_counter() - started
        if i + 1 == texts // 2:
            engine.render(longest, SynthesisOptions(speed=0.5))
            peak = round(rss_mib(), 1)
        if (i + 1) % every == 0 or i + 1 == texts:
            samples.append(round(rss_mib(), 1))
            log(f"{mode}: {i + 1}/{texts} texts, {samples[-1]} MiB")
    after_first = samples[1] if len(samples) > 1 else samples[0]
    return {
        "memory_pattern": mode == "pattern",
        "arena_shrinkage": mode == "worker",
        "texts": texts,
        "render_seconds": round(rendering, 1),
        "rss_mib_samples": samples,
        "rss_mib_after_first_sample": after_first,
        "rss_mib_after_longest_unit": peak,
        "rss_mib_end": samples[-1],
        "growth_after_first_sample_mib": round(samples[-1] - after_first, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=800, help="texts per mode")
    parser.add_argument("--every", type=int, default=50, help="RSS sample interval, in texts")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.texts < 1 or args.every < 1:
        parser.error("--texts and --every must be at least 1")
    if args.mode:  # one measurement, in a process of its own
        print(json.dumps(measure(args.mode, args.texts, args.every)))
        return
    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    log(f"{', '.join(MODES)} at once: {args.texts} texts each")
    sizes = ["--texts", str(args.texts), "--every", str(args.every)]
    runs = {
        mode: subprocess.Popen(
            [sys.executable, __file__, "--mode", mode, *sizes],
            stdout=subprocess.PIPE,
            text=True,
        )
        for mode in MODES
    }
    for mode, run in runs.items():
        stdout, _ = run.communicate(timeout=3600)
        if run.returncode:
            sys.exit(f"bench_tts_memory: {mode} failed (exit {run.returncode})")
        out[mode] = json.loads(stdout)
        log(
            f"{mode}: grew {out[mode]['growth_after_first_sample_mib']} MiB, "
            f"{out[mode]['rss_mib_after_longest_unit']} MiB after the longest unit"
        )
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
