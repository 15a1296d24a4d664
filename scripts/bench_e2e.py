"""End-to-end benchmark at the WebSocket client: first audio, frame pacing under 1/5/10
concurrent sessions, PAUSE/STOP → last frame.

Prints one JSON object on stdout; progress goes to stderr. Starts its own stack (broker,
gateway, supervisor, router, two Piper TTS workers) on free loopback ports.

- First audio: ``text`` sent → first binary frame received, new text every trial (the phrase
  cache never answers).
- Pacing: inter-arrival time of consecutive frames of one utterance; jitter is
  ``|interval - 20 ms|``. Each session is played by a simulated client with a 60 ms jitter
  buffer: a frame is late when it arrives after its playout time; each time the buffer runs
  dry is an underrun (the client re-buffers, and the count restarts from there). All clients
  run in this one process.
- Control: PAUSE or STOP sent 1 s into an utterance → the last frame that still arrives.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchkit import NUMBER_WORDS, LocalStack, progress
from benchkit import summary as ms

from bus.audio_format import FRAME_S  # benchkit put the repository on the path

log = progress("bench_e2e")

ROOT = Path(__file__).resolve().parent.parent
WORDS = NUMBER_WORDS


def start_stack(workers: int, voice: str) -> tuple[LocalStack, str]:
    stack = LocalStack(
        "bench_e2e",
        ["gateway", "supervisor", "router", *["tts_worker"] * workers],
        f"  tts_worker:\n    default_voice: {voice}\n    max_streams: 8\n    nice: 5\n",
    )

    def ready() -> str | None:
        body = stack.gateway_ready()
        return stack.url if body and body.get("tts_workers") == workers else None

    return stack, stack.start(ready, timeout_s=120)


async def utterance(
    url: str, text: str, control: str = "", control_after_s: float = 1.0
) -> dict[str, Any]:
    """Speak ``text`` in a new session; arrival times of its frames, and control timing."""
    async with websockets.connect(url, max_size=2**21) as ws:
        await ws.recv()  # session_start
        sent = time.monotonic()
        await ws.send(json.dumps({"type": "text", "text": text}))
        arrivals: list[float] = []
        control_at = 0.0
        while True:
            timeout = 0.5 if control_at else 30
            try:
                message = await asyncio.wait_for(ws.recv(), timeout)
            except TimeoutError:
                break  # after a PAUSE: no more frames
            now = time.monotonic()
            if isinstance(message, bytes):
                arrivals.append(now)
                if control and not control_at and now - arrivals[0] >= control_after_s:
                    await ws.send(json.dumps({"type": "control", "command": control}))
                    control_at = time.monotonic()
            elif json.loads(message).get("type") == "tts_end":
                break
        after = [t for t in arrivals if control_at and t > control_at]
        return {
            "first_audio_s": arrivals[0] - sent if arrivals else None,
            "arrivals": arrivals,
            "control_to_last_s": (after[-1] - control_at) if after else 0.0,
        }


def pacing(runs: list[dict[str, Any]]) -> dict[str, Any]:
    jitter, late, underruns, frames = [], 0, 0, 0
    for run in runs:
        times = run["arrivals"]
        frames += len(times)
        start = times[0] + 0.06 if times else 0.0  # playout begins after a 60 ms buffer
        for i in range(1, len(times)):
            jitter.append(abs(times[i] - times[i - 1] - FRAME_S))
            due = start + i * FRAME_S
            if times[i] > due:
                late += 1
                if times[i] > due + FRAME_S:  # a whole frame of silence: the buffer ran dry
                    underruns += 1
                    start = times[i] + 0.06 - i * FRAME_S
    return {
        "jitter": ms(jitter),
        "frames": frames,
        "late_frames": late,
        "underruns": underruns,
        "sessions_with_audio": sum(1 for r in runs if r["arrivals"]),
    }


async def run_all(url: str, trials: int, sessions: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    await utterance(url, "Warm up the stack.")
    firsts = []
    for i in range(trials):
        run = await utterance(url, f"{WORDS[i % len(WORDS)]} {i} is the number you asked for.")
        firsts.append(run["first_audio_s"])
    out["first_audio"] = ms([f for f in firsts if f is not None])
    log(f"first audio p95 {out['first_audio']['p95_ms']} ms")
    out["pacing"] = {}
    for count in sessions:
        texts = [
            f"Session {WORDS[(i + count) % len(WORDS)]} {count} reads a sentence long enough "
            "to measure how evenly its frames arrive at the client."
            for i in range(count)
        ]
        runs = await asyncio.gather(*(utterance(url, t) for t in texts))
        out["pacing"][str(count)] = pacing(list(runs))
        log(
            f"{count} sessions: jitter p95 {out['pacing'][str(count)]['jitter']['p95_ms']} ms, "
            f"{out['pacing'][str(count)]['underruns']} underruns"
        )
    for command in ("PAUSE", "STOP"):
        lat = []
        for i in range(max(3, trials // 2)):
            run = await utterance(
                url,
                f"{WORDS[i]} {command} test. This sentence keeps talking "
                "for a while so that the control lands in the middle of it.",
                control=command,
            )
            lat.append(run["control_to_last_s"])
        out[f"{command.lower()}_to_last_frame"] = ms(lat)
        log(f"{command} -> last frame p95 {out[f'{command.lower()}_to_last_frame']['p95_ms']} ms")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--voice", default="piper-en_US-joe-medium")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="small run (CI smoke test)")
    args = parser.parse_args()
    sessions = [1, 5, 10]
    if args.quick:
        args.trials, sessions, args.workers = 3, [1, 2], 1
    stack, url = start_stack(args.workers, args.voice)
    try:
        log(f"stack up at {url} with {args.workers} worker(s)")
        result = asyncio.run(run_all(url, args.trials, sessions))
    finally:
        stack.close()
    ten = result["pacing"].get("10", {})
    result = {
        "benchmark": "bench_e2e",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "voice": args.voice,
        "workers": args.workers,
        **result,
    }
    result["targets"] = {
        "first_audio_p95_le_200ms": result["first_audio"]["p95_ms"] <= 200,
        "jitter_p95_le_5ms_no_underruns_at_10": bool(ten)
        and ten["jitter"]["p95_ms"] <= 5
        and ten["underruns"] == 0,
        "pause_p95_le_30ms": result["pause_to_last_frame"]["p95_ms"] <= 30,
        "stop_p95_le_30ms": result["stop_to_last_frame"]["p95_ms"] <= 30,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
