"""TTS memory benchmark: a Piper engine's RSS over texts of ever-new lengths, as the worker
loads it (ONNX Runtime's memory pattern off) beside the same engine with the pattern on.

With the pattern on, ONNX Runtime plans and keeps an arena layout for each input shape it
meets, and every text length is a new shape: the worker's memory grows with the lengths it has
seen. Each mode runs in its own process on the same texts (a fixed seed); RSS is sampled every
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


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(pattern: bool, texts: int, every: int) -> dict[str, Any]:
    """In this process: load the engine, render ``texts`` texts, sample RSS."""
    import onnxruntime

    if pattern:  # the engine as it was: undo its ``enable_mem_pattern = False``

        class WithPattern(onnxruntime.SessionOptions):  # type: ignore[misc]
            def __setattr__(self, name: str, value: Any) -> None:
                super().__setattr__(name, True if name == "enable_mem_pattern" else value)

        onnxruntime.SessionOptions = WithPattern  # type: ignore[misc]

    from adapters.tts.base import SynthesisOptions
    from adapters.tts.piper import PiperEngine
    from adapters.tts.voicepacks import load_voicepack

    engine = PiperEngine(load_voicepack(VOICE))
    rng = random.Random(1)
    samples = [round(rss_mib(), 1)]
    started = time.monotonic()
    for i in range(texts):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30)))
        for unit in engine.plan(f"{words} {i}.", first=i % 3 == 0):  # unique: no cache hits
            engine.render(unit, SynthesisOptions())
        if (i + 1) % every == 0 or i + 1 == texts:
            samples.append(round(rss_mib(), 1))
    after_first = samples[1] if len(samples) > 1 else samples[0]
    return {
        "memory_pattern": pattern,
        "texts": texts,
        "seconds": round(time.monotonic() - started, 1),
        "rss_mib_samples": samples,
        "rss_mib_after_first_sample": after_first,
        "rss_mib_end": samples[-1],
        "growth_after_first_sample_mib": round(samples[-1] - after_first, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=800, help="texts per mode")
    parser.add_argument("--every", type=int, default=50, help="RSS sample interval, in texts")
    parser.add_argument("--mode", choices=["worker", "pattern"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.texts < 1 or args.every < 1:
        parser.error("--texts and --every must be at least 1")
    if args.mode:  # one measurement, in a process of its own
        print(json.dumps(measure(args.mode == "pattern", args.texts, args.every)))
        return
    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    for mode in ("worker", "pattern"):
        log(f"{mode}: {args.texts} texts")
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--mode",
                mode,
                "--texts",
                str(args.texts),
                "--every",
                str(args.every),
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=3600,
        )
        out[mode] = json.loads(done.stdout)
        log(f"{mode}: grew {out[mode]['growth_after_first_sample_mib']} MiB")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
