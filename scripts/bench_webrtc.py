"""WebRTC benchmark in real headless Chromium (Debian's): ICE connect time, barge-in and
voice-to-voice latency measured from the audio at the page, the same two over the WebSocket in
the same run, the gateway's CPU per session, and four browsers at once.

Prints one JSON object on stdout; progress goes to stderr. Starts its own stack (broker,
gateway, supervisor with the echo dialogue, router, VAD, ASR, one Piper TTS worker) on free
loopback ports, ICE on loopback only. Each browser trial loads the web app
(``/?autostart=1``) anew: its fake microphone plays a WAV of Piper speech from the start of
every capture (tests/browserkit.py), and a WebAudio probe in the page samples the level of the
microphone track and of the received bot track every 5 ms.

- ICE connect: the gateway's ``duplex_webrtc_connect_seconds`` (offer received → peer
  connection connected) for each page load, read from ``/metrics`` before and after it; and at
  the page, navigation → ``session_start`` received on the data channel (page load, microphone,
  offer, ICE, DTLS, SCTP).
- Barge-in at the browser: the bot speaks a long text; 5 s into the capture the microphone plays
  a spoken sentence. Latency = the microphone track's first level above -40 dBFS (after
  Chromium's capture processing) → the time after which the bot's received audio stays below
  -50 dBFS until its answer starts (never silent before it, no hold at all, or the sentence
  kept off the track: unmeasured, and the target is not met).
  Two sets of trials, each in a fresh browser: the web app as it opens (``browser``: Chrome's
  echo canceller on, which keeps the person's voice out while the bot plays until it has
  converged, so the first trials can arrive chopped), and with ``?headphones=1``
  (``browser_headphones``: echo cancellation off).
- Voice-to-voice at the browser: the microphone plays a question. Latency = the end of its
  speech (the track's first rise above -40 dBFS plus the speech's length in the file: Chromium's
  noise suppression stretches falling edges, not rising ones) → the bot's audio first above
  -50 dBFS at the page.
- WebSocket: scripts/bench_voice.py's trials on the same stack and the same speech (at the
  client: the first chunk sent → the last bot frame received; the last chunk sent → the first
  reply frame received).
- Gateway CPU: its user+system time over 10 s with no session, with four WebRTC sessions whose
  bot speaks, and with four WebSocket sessions doing the same (per session, idle subtracted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_voice
from benchkit import NUMBER_WORDS, LocalStack, progress
from benchkit import summary as ms

from tests.browserkit import (
    SILENT_DBFS,
    Browser,
    Page,
    events,
    first_above,
    has,
    require_chromium,
    silent_for_good,
    write_fake_mic,
)
from tests.voicekit import silence
from tests.voicekit import speech as synthesize

log = progress("bench_webrtc")
LOUD_DBFS = -40.0
BARGE_AT_S = 5.0
"""Seconds of silence in the fake microphone before the barge-in sentence."""
ASK_AT_S = 2.5
"""...and before a question."""
TARGETS = {"ice_p95_ms": 1000, "barge_in_p95_ms": 150, "voice_to_voice_p50_ms": 600}
CPU_WINDOW_S = 10.0
MODES = {"browser": "", "browser_headphones": "&headphones=1"}
"""Barge-in trials: the web app as it opens (Chrome's echo canceller on), and with its
"headphones" box ticked (echo cancellation off)."""


def start_stack(jitter_buffer: str) -> LocalStack:
    webrtc = (
        f"    webrtc:\n      ice_addresses: [127.0.0.1]\n      jitter_buffer: {jitter_buffer}\n"
    )
    stack = LocalStack(
        "bench_webrtc", ["gateway", "supervisor", "router", "vad", "asr", "tts_worker"], webrtc
    )

    def ready() -> bool | None:
        body = stack.gateway_ready()
        return True if body and body.get("voice_in") else None

    stack.start(ready)
    return stack


def http(stack: LocalStack) -> str:
    return f"http://127.0.0.1:{stack.http_port}"


def connect_seconds(stack: LocalStack) -> tuple[float, float]:
    """The gateway's (sum, count) of ``duplex_webrtc_connect_seconds``."""
    text = urllib.request.urlopen(http(stack) + "/metrics", timeout=5).read().decode()
    found = {
        name: float(value)
        for name, value in re.findall(
            r"^duplex_webrtc_connect_seconds_(sum|count) (\S+)$", text, re.M
        )
    }
    return found.get("sum", 0.0), found.get("count", 0.0)


def speech_span_ms(pcm16k: bytes) -> tuple[float, float]:
    """(first, last) 20 ms chunk above -40 dBFS, in ms from the start of ``pcm16k``."""
    first, last = bench_voice.loud_chunks(pcm16k)
    return first * 20.0, (last + 1) * 20.0


def load(page: Page, stack: LocalStack, exact: bool = True, query: str = "") -> dict[str, float]:
    """(Re)load the web app (``query`` added to its URL) until it is connected and the session
    listens; connect figures."""
    before = connect_seconds(stack)
    page.goto(f"{http(stack)}/?autostart=1{query}")
    page.install_audio_probe()
    page.wait_for("window.duplex && window.duplex.state === 'connected'", 15)
    page.wait_for(has("state", state="LISTENING"), 10)
    after = connect_seconds(stack)
    start = events(page, "session_start")[0]
    if exact and after[1] != before[1] + 1:
        raise RuntimeError(f"expected one connect in the gateway's metrics, got {after} {before}")
    return {"server_s": after[0] - before[0], "page_s": start["received_ms"] / 1000}


def browser_barge(page: Page, stack: LocalStack, text: str, query: str = "") -> dict[str, Any]:
    connect = load(page, stack, query=query)
    page.evaluate(f"window.duplex.send({json.dumps({'type': 'text', 'text': text})})")
    try:  # the sentence can be kept out whole by Chrome's echo canceller: no hold at all
        page.wait_for(has("barge_in"), 15)
    except TimeoutError:
        uid = events(page, "tts_start")[0]["utterance_id"]
    else:
        uid = events(page, "barge_in")[0]["utterance_id"]
    try:  # a hold that resumed for good (no words heard) lets the long text play on
        page.wait_for(has("tts_end", utterance_id=uid), 10)
        end = next(e for e in events(page, "tts_end") if e["utterance_id"] == uid)
    except TimeoutError:
        end = {"reason": "not_ended"}
    try:  # its answer to the sentence: the bot's next audio is not the interrupted one
        other = f"e.type === 'tts_start' && e.utterance_id !== {json.dumps(uid)}"
        page.wait_for(f"window.duplex.events.some(e => {other})", 10)
        answer = next(e for e in events(page, "tts_start") if e["utterance_id"] != uid)
        answer_ms = answer["received_ms"]
    except TimeoutError:
        answer_ms = None
    time.sleep(0.2)
    trace = page.audio_trace()
    spoke = first_above(trace.t_ms, trace.mic_dbfs, LOUD_DBFS, after_ms=(BARGE_AT_S - 1) * 1000)
    talking = first_above(trace.t_ms, trace.bot_dbfs, SILENT_DBFS)
    quiet = None  # the sentence kept off the track (echo cancellation): no barge-in to time
    if spoke is not None:
        window = trace.t_ms < (answer_ms if answer_ms is not None else trace.t_ms[-1] + 1)
        quiet = silent_for_good(trace.t_ms[window], trace.bot_dbfs[window], after_ms=spoke)
    return {
        "latency_s": None if quiet is None or spoke is None else (quiet - spoke) / 1000,
        "mic_heard": spoke is not None,
        "bot_was_speaking": talking is not None and (spoke is None or talking < spoke),
        "held": bool(events(page, "barge_in")),
        "end_reason": end["reason"],
        "connect": connect,
        "server_ms": (events(page, "metrics") or [{}])[-1].get("barge_in_ms") or 0.0,
    }


def browser_turn(
    page: Page, stack: LocalStack, speech_ms: float, exact: bool = True
) -> dict[str, Any]:
    connect = load(page, stack, exact)
    page.wait_for(has("tts_start"), 20)
    started = events(page, "tts_start")[0]["received_ms"]
    page.wait_for(has("tts_end"), 20)
    time.sleep(0.2)
    trace = page.audio_trace()
    onset = first_above(trace.t_ms, trace.mic_dbfs, LOUD_DBFS, after_ms=(ASK_AT_S - 1) * 1000)
    heard = first_above(trace.t_ms, trace.bot_dbfs, SILENT_DBFS, after_ms=started - 100)
    if onset is None or heard is None:
        raise RuntimeError(f"no edge: speech {onset}, reply {heard}")
    finals = [e["text"] for e in events(page, "transcript") if e["final"]]
    return {
        "latency_s": (heard - (onset + speech_ms)) / 1000,
        "heard": " ".join(finals),
        "connect": connect,
        "server_turn_ms": (events(page, "metrics") or [{}])[-1].get("turn_latency_ms") or 0.0,
    }


def unmeasured(values: list[float | None]) -> dict[str, Any]:
    """Percentiles of the measured values and how many were not (None)."""
    measured = [v for v in values if v is not None]
    return {**ms(measured), "unmeasured": len(values) - len(measured)}


def barge_figures(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Barge-in figures of one mode's trials; a trial with no figure (no hold, the sentence
    kept off the track, or the bot never silent before its answer) is unmeasured, and the
    target is then not met."""
    b = unmeasured([t["latency_s"] for t in trials])
    first = trials[0]["latency_s"]
    return {
        **b,
        "target_p95_ms": TARGETS["barge_in_p95_ms"],
        "met": b["unmeasured"] == 0 and b["p95_ms"] <= TARGETS["barge_in_p95_ms"],
        "mic_heard": sum(1 for t in trials if t["mic_heard"]),
        "held": sum(1 for t in trials if t["held"]),
        "ended_barged_in": sum(1 for t in trials if t["end_reason"] == "barged_in"),
        "bot_was_speaking": sum(1 for t in trials if t["bot_was_speaking"]),
        "first_trial_ms": None if first is None else round(first * 1000, 1),  # as ms() rounds
        "server_side": ms([t["server_ms"] / 1000 for t in trials if t["server_ms"]]),
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_share(pid: int, seconds: float = CPU_WINDOW_S) -> float:
    """Cores the process used over ``seconds`` (1.0 = one core)."""
    before, start = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - start)


def long_text(i: int) -> str:
    return bench_voice.LONG.format(n=NUMBER_WORDS[i % len(NUMBER_WORDS)]) * 3


async def websocket_speakers(url: str, n: int, seconds: float) -> None:
    """``n`` WebSocket sessions whose bot speaks for ``seconds`` (clients read everything)."""

    async def one(i: int) -> None:
        async with websockets.connect(url, max_size=2**21) as ws:
            await ws.send(json.dumps({"type": "text", "text": long_text(i)}))
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(ws.recv(), deadline - time.monotonic())
                except TimeoutError:
                    break

    await asyncio.gather(*(one(i) for i in range(n)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="trials of each kind (>= 20)")
    parser.add_argument("--sessions", type=int, default=4, help="browsers at once")
    parser.add_argument(
        "--jitter-buffer",
        choices=("pass_through", "aiortc"),
        default="pass_through",
        help="the gateway's microphone jitter buffer (aiortc: its 80 ms prefetch)",
    )
    parser.add_argument("--screenshot", type=Path, help="save the page mid-conversation here")
    parser.add_argument(
        "--cpu-window",
        type=float,
        default=CPU_WINDOW_S,
        help=f"seconds the gateway's CPU is measured over, each mode (default {CPU_WINDOW_S:g})",
    )
    args = parser.parse_args()
    if not 1 <= args.cpu_window <= 120:
        parser.error("--cpu-window must be 1 to 120 seconds")
    require_chromium()
    questions = [bench_voice.QUESTIONS[i % 4] for i in range(4)]
    barge_speech = synthesize(bench_voice.BARGES[0])
    question_speech = [synthesize(q) for q in questions]
    tmp = Path(tempfile.mkdtemp(prefix="bench_webrtc_"))
    barge_wav = write_fake_mic(tmp / "barge.wav", silence(BARGE_AT_S) + barge_speech + silence(4))
    ask_wavs = [
        write_fake_mic(tmp / f"ask{i}.wav", silence(ASK_AT_S) + s + silence(4))
        for i, s in enumerate(question_speech)
    ]
    spans = [speech_span_ms(s) for s in question_speech]
    log(f"starting the stack (jitter buffer {args.jitter_buffer})")
    stack = start_stack(args.jitter_buffer)
    gateway_pid = stack.actor_pids()["gateway"][0]  # the actor, not its `duplex run` watcher
    result: dict[str, Any] = {
        "benchmark": "bench_webrtc",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "trials": args.trials,
        "jitter_buffer": args.jitter_buffer,
    }
    try:
        barges: dict[str, list[dict[str, Any]]] = {}
        for mode, query in MODES.items():
            barges[mode] = []
            with Browser.launch(barge_wav) as browser:  # a fresh browser: AEC3 learns anew
                page = browser.new_page()
                for i in range(args.trials):
                    barges[mode].append(browser_barge(page, stack, long_text(i), query))
                    got = barges[mode][-1]["latency_s"]
                    shown = "not silent before its answer" if got is None else f"{got * 1e3:.0f} ms"
                    log(f"browser barge-in ({mode}) {i + 1}/{args.trials}: {shown}")
        turns = []
        for i in range(args.trials):
            k = i % len(ask_wavs)
            with Browser.launch(ask_wavs[k]) as browser:
                page = browser.new_page()
                speech_ms = spans[k][1] - spans[k][0]
                turns.append(browser_turn(page, stack, speech_ms))
                if args.screenshot and i == 0:
                    page.screenshot(args.screenshot)
            got = turns[-1]["latency_s"] * 1000
            log(f"browser voice-to-voice {i + 1}/{args.trials}: {got:.0f} ms")

        ws_barge, ws_turns = [], []
        barge_clip = bytes(2 * 1600) + barge_speech
        for i in range(args.trials):
            ws_barge.append(
                asyncio.run(bench_voice.barge_trial(stack.url, long_text(i), barge_clip))
            )
        for i in range(args.trials):
            clip = bytes(2 * 3200) + question_speech[i % len(question_speech)]
            ws_turns.append(asyncio.run(bench_voice.turn_trial(stack.url, clip)))
        log("websocket trials done")

        # Four browsers at once, each asking its question.
        def together(k: int) -> dict[str, Any]:
            with Browser.launch(ask_wavs[k % len(ask_wavs)]) as browser:
                page = browser.new_page()
                span = spans[k % len(spans)]
                # (pages connect at once: the gateway's connect metric is not per page here)
                return browser_turn(page, stack, span[1] - span[0], exact=False)

        with ThreadPoolExecutor(args.sessions) as pool:
            concurrent = list(pool.map(lambda k: _safe(together, k), range(args.sessions)))
        log(f"{args.sessions} browsers at once done")

        idle = cpu_share(gateway_pid, args.cpu_window)
        with Browser.launch(write_fake_mic(tmp / "quiet.wav", silence(60))) as browser:
            pages = [browser.new_page() for _ in range(args.sessions)]
            for page in pages:
                load(page, stack, exact=False)
            for i, page in enumerate(pages):
                page.evaluate(
                    f"window.duplex.send({json.dumps({'type': 'text', 'text': long_text(i)})})"
                )
            time.sleep(1.0)
            webrtc_cpu = cpu_share(gateway_pid, args.cpu_window)
        time.sleep(2.0)

        async def ws_window() -> float:
            task = asyncio.get_running_loop().create_task(
                websocket_speakers(stack.url, args.sessions, args.cpu_window + 2)
            )
            await asyncio.sleep(1.0)
            share = await asyncio.to_thread(cpu_share, gateway_pid, args.cpu_window)
            await task
            return share

        ws_cpu = asyncio.run(ws_window())
    finally:
        stack.close()

    connects = [t["connect"] for t in barges["browser"] + turns]
    result["ice_connect"] = {
        **ms([c["server_s"] for c in connects]),
        "target_p95_ms": TARGETS["ice_p95_ms"],
        "page_load_to_session_start": ms([c["page_s"] for c in connects]),
    }
    result["ice_connect"]["met"] = result["ice_connect"]["p95_ms"] <= TARGETS["ice_p95_ms"]
    result["barge_in"] = {
        **{mode: barge_figures(barges[mode]) for mode in MODES},
        "websocket": {
            **ms([t["latency_s"] for t in ws_barge]),
            "ended_barged_in": sum(1 for t in ws_barge if t["end_reason"] == "barged_in"),
        },
    }
    v = unmeasured([t["latency_s"] for t in turns])
    result["voice_to_voice"] = {
        "browser": {
            **v,
            "target_p50_ms": TARGETS["voice_to_voice_p50_ms"],
            "met": v["unmeasured"] == 0 and v["p50_ms"] <= TARGETS["voice_to_voice_p50_ms"],
            "server_side": ms([t["server_turn_ms"] / 1000 for t in turns if t["server_turn_ms"]]),
        },
        "websocket": ms([t["latency_s"] for t in ws_turns]),
    }
    answered = [c["latency_s"] for c in concurrent if c.get("latency_s") is not None]
    result["browsers_at_once"] = {
        "sessions": args.sessions,
        **ms(answered),
        "unanswered": len(concurrent) - len(answered),
        "errors": [c["error"] for c in concurrent if "error" in c],
    }
    result["gateway_cpu"] = {
        "idle_cores": round(idle, 4),
        "webrtc_per_session_cores": round((webrtc_cpu - idle) / args.sessions, 4),
        "websocket_per_session_cores": round((ws_cpu - idle) / args.sessions, 4),
        "sessions": args.sessions,
        "window_s": args.cpu_window,
    }
    print(json.dumps(result, indent=2))


def _safe(fn: Any, k: int) -> dict[str, Any]:
    try:
        out: dict[str, Any] = fn(k)
        return out
    except Exception as exc:
        return {"latency_s": None, "error": f"{type(exc).__name__}: {exc}"}


if __name__ == "__main__":
    main()
