"""Echo benchmark: the bot speaks long texts while its own audio comes back into the client's
microphone through a simulated room, with the gateway's echo cancellation on and off in the
same run; then a person in another voice (espeak-ng) talks over -6 dB echo.

Each condition is one WebSocket session of ``tests/roomkit.py``'s ``EchoTalker``: it plays the
bot's frames as they arrive (dropping what is unplayed on ``barge_in``), and its microphone
streams every 20 ms from connect to close what the room makes of it: the echo delayed,
attenuated, with a 0.2 s reverberant tail and a -60 dBFS noise floor, with a sound card's
clock drift in the drift conditions. Per condition: self-interruptions (``barge_in`` events,
nobody else talking) per minute of bot speech, and final transcripts (each made of echo).
Double talk: detection (``barge_in`` within 3 s of the person's first loud frame and the
utterance ending ``barged_in``) and latency from that frame to the ``barge_in`` event, over
``--trials`` trials per mode. Prints one JSON object on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from benchkit import NUMBER_WORDS, LocalStack, progress
from benchkit import summary as ms

from tests.roomkit import EchoTalker, Room, espeak_missing_reason, other_voice
from tests.support import word_error_rate

log = progress("bench_echo")

GAINS_DB = (-30, -20, -12, -6, 0)
DELAYS_MS = (20, 60, 150, 300)
DRIFTS_PPM = (100, -100)
STORY = (
    "Here is a long answer about {n} lighthouses, and it keeps going for a while. Each keeper "
    "counted the waves at night and wrote the numbers into a big blue book. The books grew so "
    "thick that they needed new shelves, and then whole new rooms, for all the years of waves."
)
QUESTIONS = (
    "Wait a moment, what time is it?",
    "Stop please, I have a question.",
    "Hold on, tell me about the weather.",
    "Excuse me, can you repeat that?",
)
LOUD_RMS = 32768 * 10 ** (-40 / 20)


def kind(name: str, **fields: object) -> Any:
    return lambda m: m.get("type") == name and all(m.get(k) == v for k, v in fields.items())


def condition(url: str, room: Room, cancel: bool, seconds: float, seed: int) -> dict[str, Any]:
    """The bot speaks for ``seconds`` or more through ``room``; what its echo did."""
    talker = EchoTalker(url, room, echo_cancellation=cancel)
    try:
        talker.wait_for(kind("state", state="LISTENING"), 10, "the session")
        frames, texts, stuck = 0, 0, False
        while frames * 0.02 < seconds and not stuck:
            since = time.monotonic()
            n = NUMBER_WORDS[(seed + texts) % len(NUMBER_WORDS)]
            talker.send({"type": "text", "text": STORY.format(n=n)})
            texts += 1
            try:  # a self-interruption makes the echo a turn: its reply plays too (speech too)
                talker.wait_for(
                    lambda m: m.get("type") == "tts_end" and m.get("reason") != "barged_in",
                    max(30.0, 3 * seconds),  # a text not ended by then is stuck (90 s at 30 s)
                    "the text's end",
                    since=since,
                )
            except AssertionError:
                stuck = True  # interrupted by itself over and over: counted as it stands
            frames = sum(e["frames"] for e in talker.events("tts_end"))
        ends = [e["reason"] for e in talker.events("tts_end")]
        time.sleep(1.0)  # the last echo comes back
        speech_s = frames * 0.02
        barges = len(talker.events("barge_in"))
        finals = [e["text"] for e in talker.events("transcript") if e["final"]]
        metrics = talker.events("metrics")
        return {
            "bot_speech_s": round(speech_s, 1),
            "self_interruptions": barges,
            "self_interruptions_per_min": round(barges / (speech_s / 60), 2),
            "cut_by_echo": sum(1 for r in ends if r == "barged_in"),
            "never_finished_a_text": stuck,
            "echo_transcripts": len(finals),
            "echo_transcript_examples": finals[:3],
            "erle_db": metrics[-1].get("echo_erle_db") if metrics else None,
        }
    finally:
        talker.close()


def double_talk(url: str, cancel: bool, trial: int) -> dict[str, Any]:
    """The bot speaks over -6 dB echo (150 ms); 2-4 s in, the person asks a question."""
    rng = random.Random(trial)
    talker = EchoTalker(url, Room(-6, 150, seed=trial), echo_cancellation=cancel)
    try:
        talker.wait_for(kind("state", state="LISTENING"), 10, "the session")
        talker.send({"type": "text", "text": STORY.format(n=NUMBER_WORDS[trial % 40])})
        talker.wait_for(kind("tts_start"), 15, "the bot to start")
        time.sleep(rng.uniform(2.0, 4.0))
        question = QUESTIONS[trial % len(QUESTIONS)]
        voice = other_voice(question)
        samples = np.frombuffer(voice, "<i2").astype(np.float64)
        loud = next(
            i
            for i in range(0, len(samples), 320)
            if np.sqrt(np.mean(samples[i : i + 320] ** 2)) > LOUD_RMS
        )
        began = talker.speak(voice) + loud / 16000  # its first loud frame goes out then
        before = len(talker.events("barge_in"))
        try:
            barged_at, barge = talker.wait_for(kind("barge_in"), 3.0, "barge_in", since=began)
            _, end = talker.wait_for(
                kind("tts_end", utterance_id=barge["utterance_id"]), 5, "its end", since=began
            )
            detected = end["reason"] == "barged_in"
        except AssertionError:
            barged_at, detected = None, False
        finals = []
        if detected:
            try:
                _, final = talker.wait_for(
                    lambda m: m.get("type") == "transcript" and m["final"], 10, "final", began
                )
                finals.append(final["text"])
            except AssertionError:
                pass
        return {
            "detected": detected,
            "latency_s": None if barged_at is None else max(0.0, barged_at - began),
            "self_interruptions_before": before,
            "heard": finals[0] if finals else "",
            "said": question,
        }
    finally:
        talker.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="bot speech per condition")
    parser.add_argument("--trials", type=int, default=20, help="double-talk trials per mode")
    parser.add_argument("--parallel", type=int, default=2, help="sessions at once")
    parser.add_argument("--quick", action="store_true", help="one room, two trials (CI)")
    args = parser.parse_args()
    reason = espeak_missing_reason()
    if reason:
        raise SystemExit(f"bench_echo: {reason}")
    rooms: list[tuple[str, dict[str, Any]]] = [
        (f"{g}dB_{d}ms", {"gain_db": g, "delay_ms": d}) for g in GAINS_DB for d in DELAYS_MS
    ]
    rooms += [
        (f"-6dB_150ms_{p:+d}ppm", {"gain_db": -6, "delay_ms": 150, "drift_ppm": p})
        for p in DRIFTS_PPM
    ]
    trials, seconds = args.trials, args.seconds
    if args.quick:
        rooms = [r for r in rooms if r[0] == "-6dB_150ms"]
        trials, seconds = 2, min(seconds, 8.0)
    log("starting the stack (Piper, Whisper tiny.en warm-up)")
    stack = LocalStack(
        "bench_echo", ["gateway", "supervisor", "router", "vad", "asr", "tts_worker"]
    )
    url = stack.start(lambda: stack.url if (stack.gateway_ready() or {}).get("voice_in") else None)
    out: dict[str, Any] = {
        "benchmark": "bench_echo",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "seconds_per_condition": seconds,
        "room": {"tail_s": 0.2, "noise_dbfs": -60},
    }
    try:
        with ThreadPoolExecutor(max(1, args.parallel)) as pool:
            # Both modes' jobs queue at once: still --parallel sessions at a time, no idle slot
            # while one mode's last job runs alone.
            modes = {"cancellation_on": True, "cancellation_off": False}
            jobs = {
                (mode, name): pool.submit(condition, url, Room(**room), cancel, seconds, i)
                for mode, cancel in modes.items()
                for i, (name, room) in enumerate(rooms)
            }
            talks = {
                mode: [pool.submit(double_talk, url, cancel, t) for t in range(trials)]
                for mode, cancel in modes.items()
            }
            for mode in modes:
                results = {}
                for (of, name), job in jobs.items():
                    if of == mode:
                        results[name] = job.result()
                        shown = results[name]["self_interruptions"]
                        log(f"{mode} {name}: {shown} self-interruptions")
                out[mode] = {"conditions": results}
            for mode in modes:
                talk = [job.result() for job in talks[mode]]
                latencies = [t["latency_s"] for t in talk if t["detected"]]
                log(f"{mode} double talk: {len(latencies)}/{trials} detected")
                out[mode]["double_talk"] = {
                    "trials": trials,
                    "detected": len(latencies),
                    "detection_rate": round(len(latencies) / max(1, trials), 3),
                    "barge_in_latency": ms(latencies),
                    "self_interruptions_before": sum(t["self_interruptions_before"] for t in talk),
                    "transcript_wer": round(
                        float(np.mean([word_error_rate(t["said"], t["heard"]) for t in talk]))
                        if talk
                        else 0.0,
                        3,
                    ),
                    "heard": [(t["said"], t["heard"]) for t in talk][:8],
                }
    finally:
        stack.close()
    on = out["cancellation_on"]
    worst = max(c["self_interruptions"] for c in on["conditions"].values())
    talk = on["double_talk"]
    out["met"] = {
        "no_self_interruptions": worst == 0,
        "double_talk_detected_98pct": talk["detection_rate"] >= 0.98,
        "double_talk_p95_200ms": talk["barge_in_latency"]["p95_ms"] <= 200,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
