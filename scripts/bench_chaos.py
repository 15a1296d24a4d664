"""Chaos benchmark: bad input, a soak, and ``kill -9`` of each actor kind, on a real stack.

Prints one JSON object on stdout; progress goes to stderr. Starts its own stack (broker,
gateway, supervisor with the echo dialogue, router, VAD, ASR, one Piper TTS worker, each under
``duplex run``'s crash containment) on free loopback ports, every actor's output kept to count
tracebacks.

- **Bad input**: every class in :data:`BAD_INPUT` (WebSocket messages, raw WebSocket frames,
  HTTP requests) sent to a live gateway; each class's outcome (an ``error`` code, a close code,
  an HTTP status, or the connection cut by the server) against the one expected. A connection
  that closes without a close frame where none was expected is ``dropped``; no answer within
  5 s is ``silent``. Afterwards the session that took the messages must still speak.
- **Soak**: ``--sessions`` clients each speak texts one after another for ``--minutes``;
  every utterance must end ``completed`` with as many frames received as ``tts_end`` says;
  every actor's RSS and open files are sampled each 10 s (after warm-up: the first fifth of the
  soak, at most 2 minutes; for the TTS worker, also until its phrase cache holds 90 % of its
  bound, ``duplex_tts_phrase_cache_bytes``: filling it is growth by design). Growth after
  warm-up is the lowest sample of its last three minutes against the lowest of its first three
  (:data:`FLOOR_WINDOW_S`): what the process keeps, not the work in flight at one sample.
- **Kills**: per actor kind, a session has the bot speaking (``mid_speech``) or the person
  speaking (``mid_utterance``) when the kind's process is killed with SIGKILL. Recorded: how
  what was in flight ended (``in_flight``: the utterance's ``tts_end`` reason; for speech,
  ``replied``, an error code, or ``lost``), whether any text got no first answer
  (``tts_start``, ``tts_end`` or ``error``) within 3 s, the time to the next text that is heard
  (``text_turn_ms``: its first frame, from the kill or from the end of the utterance in flight
  if later) and from the kill to the reply of the next spoken turn (``spoken_turn_ms``), in the
  same session when it survives. ``duplex run`` restarts the
  actor; the broker (not under ``duplex run``) is restarted by the benchmark. Each kind in
  both scenarios; ``--short`` (the test suite's) in the one of :data:`SHORT_SCENARIO`, with a
  quarter-minute soak.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import re
import signal
import socket
import struct
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchkit import LocalStack, free_port, progress

from bus.audio_format import MIC, SAMPLE_BYTES  # benchkit put the repository on the path
from tests.support import rss_mib
from tests.voicekit import silence
from tests.voicekit import speech as synthesize

log = progress("bench_chaos")
WORKER_METRICS_PORT = free_port()
ANSWER_S = 3.0
"""The bound: every text gets ``tts_end`` or ``error`` (its first answer) within this."""
KINDS = ("tts_worker", "supervisor", "router", "vad", "asr", "broker")
LONG = (
    "This is a long answer that keeps going for a while, so that there is time for something "
    "to go wrong while it plays. It talks about many things, one after another. "
)
QUESTION = "What is the weather like in Paris today?"
CHUNK = MIC.frame_bytes


# ---------------------------------------------------------------------- a client


class Client:
    """One WebSocket session; everything it receives, timestamped."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.frames = 0
        self.closed_at: float | None = None
        self.task = asyncio.get_running_loop().create_task(self._receive())
        self.changed = asyncio.Event()

    @classmethod
    async def connect(cls, url: str) -> Client:
        client = cls(await websockets.connect(url, max_size=None))
        await client.wait_for(lambda e: e["type"] == "session_start", 10)
        return client

    async def _receive(self) -> None:
        try:
            async for message in self.ws:
                if isinstance(message, bytes):
                    self.frames += 1
                else:
                    self.events.append((time.monotonic(), json.loads(message)))
                self.changed.set()
        except websockets.ConnectionClosed:
            pass
        self.closed_at = time.monotonic()
        self.changed.set()

    def of(self, kind: str, since: float = 0.0) -> list[dict[str, Any]]:
        return [e for at, e in self.events if e["type"] == kind and at >= since]

    async def wait_for(
        self, match: Callable[[dict[str, Any]], bool], timeout: float, since: float = 0.0
    ) -> tuple[float, dict[str, Any]] | None:
        """The first event since ``since`` that matches, waiting ``timeout`` at most."""
        deadline = time.monotonic() + timeout
        while True:
            for at, event in self.events:
                if at >= since and match(event):
                    return at, event
            left = deadline - time.monotonic()
            if left <= 0 or self.closed_at is not None:
                return None
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                return None

    async def say(self, text: str, timeout: float) -> tuple[str, float]:
        """Send ``text``; its answer (``tts_end`` reason, ``error`` code, ``closed`` or
        ``silent``) and when its first answer came (``tts_start`` or ``error``)."""
        sent = time.monotonic()
        await self.ws.send(json.dumps({"type": "text", "text": text}))
        first = await self.wait_for(lambda e: e["type"] in ("tts_start", "error"), timeout, sent)
        if first is None:
            return ("closed" if self.closed_at else "silent"), time.monotonic() - sent
        at, event = first
        if event["type"] == "error":
            return f"error:{event['code']}", at - sent
        uid = event["utterance_id"]  # (an utterance playing when it was sent ends first)
        end = await self.wait_for(
            lambda e: e["type"] == "tts_end" and e["utterance_id"] == uid, 120, sent
        )
        if end is None:
            return ("closed" if self.closed_at else "silent"), at - sent
        return str(end[1]["reason"]), at - sent

    async def speak(self, pcm: bytes) -> float:
        """Stream ``pcm`` in real time, then silence; returns when its last chunk was sent."""
        start = time.monotonic()
        audio = pcm + silence(1.0)
        for i, offset in enumerate(range(0, len(audio), CHUNK)):
            await asyncio.sleep(max(0.0, start + i * 0.02 - time.monotonic()))
            if self.closed_at is not None:
                break
            await self.ws.send(audio[offset : offset + CHUNK])
        return time.monotonic()

    async def close(self) -> None:
        await self.ws.close()
        self.task.cancel()


# ---------------------------------------------------------------------- bad input


def ws_frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True) -> bytes:
    """One client WebSocket frame, by hand (so that it can be wrong)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    mask_bit = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def raw_upgrade(port: int, headers: str | None = None) -> socket.socket:
    """A TCP connection that has done the WebSocket handshake on ``/ws`` (or sent
    ``headers`` instead)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            headers
            or f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode("latin-1")
    )
    return sock


def read_http_status(sock: socket.socket) -> str:
    head = b""
    try:
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                return "cut" if not head else f"http:{head.split()[1].decode()}"
            head += chunk
    except TimeoutError:
        return "silent"
    except ConnectionResetError:
        return "cut"
    return f"http:{head.split()[1].decode()}"


def raw_answer(sock: socket.socket) -> str:
    """After a raw frame: ``error:CODE`` (an error event), ``close:CODE`` or ``cut``."""
    buffer = b""
    sock.settimeout(5)
    try:
        while True:
            while len(buffer) < 2:
                chunk = sock.recv(65536)
                if not chunk:
                    return "cut"
                buffer += chunk
            opcode, n = buffer[0] & 0x0F, buffer[1] & 0x7F
            start = 2
            if n == 126:
                n, start = struct.unpack("!H", buffer[2:4])[0], 4
            elif n == 127:
                n, start = struct.unpack("!Q", buffer[2:10])[0], 10
            while len(buffer) < start + n:
                chunk = sock.recv(65536)
                if not chunk:
                    return "cut"
                buffer += chunk
            payload, buffer = buffer[start : start + n], buffer[start + n :]
            if opcode == 8:
                return f"close:{struct.unpack('!H', payload[:2])[0] if len(payload) >= 2 else 0}"
            if opcode == 1:
                event = json.loads(payload)
                if event["type"] == "error":
                    return f"error:{event['code']}"
    except TimeoutError:
        return "silent"
    except (ConnectionResetError, BrokenPipeError):
        return "cut"


def text_msg(text_json: str) -> str:
    return '{"type": "text", "text": ' + text_json + "}"


BAD_INPUT: list[tuple[str, str, Any, str]] = [
    # (name, how, what to send, expected)
    ("not_json", "ws", "{not json", "error:INVALID_MESSAGE"),
    ("empty_text_message", "ws", "", "error:INVALID_MESSAGE"),
    ("json_array", "ws", "[1, 2]", "error:INVALID_MESSAGE"),
    ("json_number", "ws", "42", "error:INVALID_MESSAGE"),
    ("json_string", "ws", '"hello"', "error:INVALID_MESSAGE"),
    ("json_null", "ws", "null", "error:INVALID_MESSAGE"),
    ("no_type", "ws", '{"text": "hi"}', "error:INVALID_MESSAGE"),
    ("type_number", "ws", '{"type": 7}', "error:INVALID_MESSAGE"),
    ("type_null", "ws", '{"type": null}', "error:INVALID_MESSAGE"),
    ("type_list", "ws", '{"type": ["text"]}', "error:INVALID_MESSAGE"),
    ("unknown_type", "ws", '{"type": "dance"}', "error:UNSUPPORTED_TYPE"),
    ("unknown_type_surrogate", "ws", '{"type": "\\ud800"}', "error:INVALID_MESSAGE"),
    ("nested_arrays_10000", "ws", "[" * 10_000 + "]" * 10_000, "error:INVALID_MESSAGE"),
    ("nested_objects_10000", "ws", '{"a":' * 10_000 + "1" + "}" * 10_000, "error:INVALID_MESSAGE"),
    ("json_over_64KiB", "ws", text_msg(json.dumps("a" * 70_000)), "error:INVALID_MESSAGE"),
    ("text_missing", "ws", '{"type": "text"}', "error:INVALID_MESSAGE"),
    ("text_number", "ws", text_msg("5"), "error:INVALID_MESSAGE"),
    ("text_list", "ws", text_msg('["a"]'), "error:INVALID_MESSAGE"),
    ("text_object", "ws", text_msg('{"a": 1}'), "error:INVALID_MESSAGE"),
    ("text_null", "ws", text_msg("null"), "error:INVALID_MESSAGE"),
    ("text_empty", "ws", text_msg('""'), "error:INVALID_MESSAGE"),
    ("text_blank", "ws", text_msg('"  \\n\\t "'), "error:INVALID_MESSAGE"),
    ("text_too_long", "ws", text_msg(json.dumps("word " * 500)), "error:TEXT_TOO_LONG"),
    ("text_lone_surrogate", "ws", text_msg('"\\ud800"'), "error:INVALID_MESSAGE"),
    ("text_surrogate_pair_reversed", "ws", text_msg('"\\udc00\\ud800"'), "error:INVALID_MESSAGE"),
    ("text_nul", "ws", text_msg('"a\\u0000b"'), "error:INVALID_TEXT"),
    ("text_bell", "ws", text_msg('"ding \\u0007 dong"'), "error:INVALID_TEXT"),
    ("text_escape_sequence", "ws", text_msg('"\\u001b[31mred"'), "error:INVALID_TEXT"),
    ("text_c1_control", "ws", text_msg('"next \\u0085 line"'), "error:INVALID_TEXT"),
    ("text_delete", "ws", text_msg('"del \\u007f"'), "error:INVALID_TEXT"),
    ("text_private_use", "ws", text_msg('"private \\ue000"'), "error:INVALID_TEXT"),
    ("control_missing", "ws", '{"type": "control"}', "error:INVALID_MESSAGE"),
    ("control_unknown", "ws", '{"type": "control", "command": "JUMP"}', "error:INVALID_MESSAGE"),
    ("control_lowercase", "ws", '{"type": "control", "command": "stop"}', "error:INVALID_MESSAGE"),
    ("control_number", "ws", '{"type": "control", "command": 1}', "error:INVALID_MESSAGE"),
    ("config_unknown_field", "ws", '{"type": "session_config", "x": 1}', "error:INVALID_MESSAGE"),
    (
        "config_voice_number",
        "ws",
        '{"type": "session_config", "voice": 3}',
        "error:INVALID_MESSAGE",
    ),
    (
        "config_voice_too_long",
        "ws",
        json.dumps({"type": "session_config", "voice": "v" * 129}),
        "error:INVALID_MESSAGE",
    ),
    (
        "config_voice_unknown",
        "ws",
        '{"type": "session_config", "voice": "nobody"}',
        "error:UNKNOWN_VOICE",
    ),
    (
        "config_voice_surrogate",
        "ws",
        '{"type": "session_config", "voice": "\\udfff"}',
        "error:INVALID_MESSAGE",
    ),
    (
        "config_audio_format",
        "ws",
        '{"type": "session_config", "audio_format": "mp3"}',
        "error:INVALID_MESSAGE",
    ),
    (
        "config_rate_44100",
        "ws",
        '{"type": "session_config", "input_sample_rate": 44100}',
        "error:INVALID_MESSAGE",
    ),
    (
        "config_rate_true",
        "ws",
        '{"type": "session_config", "input_sample_rate": true}',
        "error:INVALID_MESSAGE",
    ),
    (
        "config_rate_string",
        "ws",
        '{"type": "session_config", "input_sample_rate": "16000"}',
        "error:INVALID_MESSAGE",
    ),
    (
        "config_dialogue_unknown",
        "ws",
        '{"type": "session_config", "dialogue": "oracle"}',
        "error:INVALID_MESSAGE",
    ),
    ("audio_one_byte", "ws", b"\x01", "error:INVALID_MESSAGE"),
    ("audio_odd_length", "ws", b"\x01\x02\x03", "error:INVALID_MESSAGE"),
    ("audio_empty", "ws", b"", "error:INVALID_MESSAGE"),
    ("audio_far_ahead", "ws", bytes(SAMPLE_BYTES * MIC.sample_rate * 31), "error:RATE_LIMITED"),
    ("flood_600_messages", "flood", '{"type": "session_config"}', "error:RATE_LIMITED"),
    ("message_over_1MiB", "ws", bytes(1024 * 1024 + 2), "close:1009"),
    ("text_frame_invalid_utf8", "frame", ws_frame(1, b"\xff\xfe\x80"), "close:1007"),
    # aiohttp takes an unmasked client frame (RFC 6455 says close 1002) and parses it as usual.
    (
        "unmasked_frame",
        "frame",
        ws_frame(1, b'{"type":"dance"}', masked=False),
        "error:UNSUPPORTED_TYPE",
    ),
    ("reserved_opcode", "frame", ws_frame(3, b"x"), "close:1002"),
    ("continuation_first", "frame", ws_frame(0, b"x"), "close:1002"),
    ("fragmented_ping", "frame", ws_frame(9, b"x", fin=False), "close:1002"),
    ("ping_over_125_bytes", "frame", ws_frame(9, b"x" * 200), "close:1002"),
    (
        "upgrade_bad_version",
        "http",
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 6\r\n\r\n",
        "http:400",
    ),
    (
        "upgrade_no_key",
        "http",
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n",
        "http:400",
    ),
    ("http_garbage_request_line", "http", "HELLO THERE\r\n\r\n", "http:400"),
    ("http_header_over_8KiB", "http", f"GET / HTTP/1.1\r\nX: {'a' * 9000}\r\n\r\n", "http:400"),
    ("http_unknown_path", "http", "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n", "http:404"),
    ("synthesize_not_json", "post", b"{nope", "http:400"),
    ("synthesize_control_char", "post", b'{"text": "a\\u0007b"}', "http:400"),
    ("synthesize_body_over_256KiB", "post", b"x" * (300 * 1024), "http:413"),
]


async def bad_input(url: str, port: int) -> dict[str, Any]:
    """Every class of :data:`BAD_INPUT`; then the session that took them must still speak."""
    results = []
    client = await Client.connect(url)
    for name, how, what, expected in BAD_INPUT:
        got = await _one_bad_input(client, url, port, how, what)
        if got.startswith("close") and how == "ws":
            client = await Client.connect(url)  # (expected only for the 1 MiB message)
        results.append({"class": name, "expected": expected, "got": got, "ok": got == expected})
        log(f"bad input {name}: {got}")
    await asyncio.sleep(1.5)  # the flood's rate bucket refills
    still, _ = await client.say("Still speaking after all that.", 30)
    await client.close()
    dropped = sum(1 for r in results if r["got"] in ("cut", "dropped"))
    return {
        "classes": len(results),
        "as_expected": sum(1 for r in results if r["ok"]),
        "dropped_connections": dropped,
        "silent": sum(1 for r in results if r["got"] == "silent"),
        "session_speaks_after": still == "completed",
        "results": results,
    }


async def _one_bad_input(client: Client, url: str, port: int, how: str, what: Any) -> str:
    if how in ("ws", "flood"):
        since = time.monotonic()
        for _ in range(600 if how == "flood" else 1):
            await client.ws.send(what)
        found = await client.wait_for(lambda e: e["type"] == "error", 5, since)
        if how == "flood":
            await asyncio.sleep(0.5)  # the rest of the flood's answers
        if found is not None:
            return f"error:{found[1]['code']}"
        if client.closed_at is not None:
            code = client.ws.close_code
            return f"close:{code}" if code not in (None, 1006) else "dropped"
        return "silent"
    if how == "frame":

        def frame() -> str:
            sock = raw_upgrade(port)
            try:
                if read_http_status(sock) != "http:101":
                    return "no_upgrade"
                sock.sendall(what)
                return raw_answer(sock)
            finally:
                sock.close()

        return await asyncio.to_thread(frame)
    if how == "http":

        def http() -> str:
            sock = raw_upgrade(port, what)
            try:
                return read_http_status(sock)
            finally:
                sock.close()

        return await asyncio.to_thread(http)
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/synthesize", data=what, method="POST"
    )

    def post() -> str:
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return f"http:{response.status}"
        except urllib.error.HTTPError as exc:
            return f"http:{exc.code}"
        except (ConnectionError, urllib.error.URLError):
            return "cut"

    return await asyncio.to_thread(post)


# ---------------------------------------------------------------------- processes


def rss_and_fds(pid: int) -> tuple[float, int] | None:
    try:
        return rss_mib(pid), len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


# ---------------------------------------------------------------------- soak


@dataclass
class SoakCounts:
    utterances: int = 0
    completed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    frames_mismatch: int = 0


FLOOR_WINDOW_S = 180.0
"""RSS growth compares the lowest sample of the first this-many seconds after warm-up with the
lowest of the last as many (at most a third of the span each). A busy process's RSS swings with
the work in flight (the TTS worker's by 20-40 MiB within seconds, as each inference allocates
and gives back its tensors), so two single samples differ by chance; what a process keeps, and
a leak raises, is its floor."""


def floor_windows(samples: list[tuple[float, float, int]]) -> tuple[list[float], list[float]]:
    """The RSS samples of the first and of the last floor window of ``samples`` (time, RSS,
    fds), each at least one sample."""
    span = samples[-1][0] - samples[0][0]
    width = min(FLOOR_WINDOW_S, span / 3)
    first = [s[1] for s in samples if s[0] <= samples[0][0] + width]
    last = [s[1] for s in samples if s[0] >= samples[-1][0] - width]
    return first, last


async def soak(stack: LocalStack, sessions: int, minutes: float) -> dict[str, Any]:
    counts = SoakCounts()
    pids = {kind: found[0] for kind, found in stack.actor_pids().items() if kind != "broker"}
    pids["broker"] = stack.procs[0].pid
    samples: dict[str, list[tuple[float, float, int]]] = {kind: [] for kind in pids}
    cache_full_at: float | None = None
    """When the worker's phrase cache first held 90 % of its bound: before, its RSS grows by
    design (16 MiB of rendered units), so its warm-up lasts until then."""
    cache_bytes: list[float] = []
    end = time.monotonic() + minutes * 60
    started = time.monotonic()

    async def speaker(n: int) -> None:
        client = await Client.connect(stack.url)
        i = 0
        while time.monotonic() < end:
            i += 1
            frames_before = client.frames
            reason, _ = await client.say(f"Session {n} says sentence number {i}. It is short.", 30)
            counts.utterances += 1
            if reason == "completed":
                counts.completed += 1
                end_event = client.of("tts_end")[-1]
                if client.frames - frames_before != end_event["frames"]:
                    counts.frames_mismatch += 1
            else:
                counts.errors[reason] = counts.errors.get(reason, 0) + 1
                if client.closed_at is not None:
                    client = await Client.connect(stack.url)
        await client.close()

    async def sampler() -> None:
        nonlocal cache_full_at
        while time.monotonic() < end:
            held = gateway_metric(stack, "duplex_tts_phrase_cache_bytes", WORKER_METRICS_PORT)
            bound = gateway_metric(stack, "duplex_tts_phrase_cache_max_bytes", WORKER_METRICS_PORT)
            cache_bytes.append(held)
            if cache_full_at is None and bound > 0 and held >= 0.9 * bound:
                cache_full_at = time.monotonic() - started
            for kind, pid in pids.items():
                figures = rss_and_fds(pid)
                if figures is not None:
                    samples[kind].append((time.monotonic() - started, *figures))
            log(f"soak: {counts.utterances} utterances, {int(end - time.monotonic())} s left")
            await asyncio.sleep(10)

    underruns_before = gateway_metric(stack, "duplex_playout_underruns_total")
    await asyncio.gather(sampler(), *(speaker(n) for n in range(sessions)))
    warm_s = min(120.0, minutes * 60 / 5)
    actors = {}
    for kind, series in samples.items():
        until = warm_s
        if kind == "tts_worker":
            until = max(warm_s, cache_full_at if cache_full_at is not None else float("inf"))
        warm = [s for s in series if s[0] >= until] or series[-1:]
        if not warm:
            continue
        first, last = floor_windows(warm)
        actors[kind] = {
            "warmup_s": round(min(until, series[-1][0]), 1),
            "rss_mib_per_minute": [round(s[1], 1) for s in series[::6]],
            "rss_mib_start": round(series[0][1], 1),
            "rss_mib_after_warmup": round(warm[0][1], 1),
            "rss_mib_end": round(warm[-1][1], 1),
            "rss_mib_max": round(max(s[1] for s in warm), 1),
            "rss_floor_window_samples": len(first),
            "rss_floor_mib_after_warmup": round(min(first), 1),
            "rss_floor_mib_end": round(min(last), 1),
            "rss_growth_after_warmup_pct": round(100 * (min(last) / min(first) - 1), 2),
            "fds_after_warmup": warm[0][2],
            "fds_end": warm[-1][2],
            "samples": len(series),
        }
    return {
        "sessions": sessions,
        "minutes": minutes,
        "warmup_s": warm_s,
        "tts_phrase_cache_full_s": None if cache_full_at is None else round(cache_full_at, 1),
        "tts_phrase_cache_mib_end": round(cache_bytes[-1] / 2**20, 1) if cache_bytes else None,
        "utterances": counts.utterances,
        "completed": counts.completed,
        "errors": counts.errors,
        "frames_mismatch": counts.frames_mismatch,
        "underruns": gateway_metric(stack, "duplex_playout_underruns_total") - underruns_before,
        "actors": actors,
    }


def gateway_metric(stack: LocalStack, name: str, port: int | None = None) -> float:
    url = f"http://127.0.0.1:{port or stack.http_port}/metrics"
    try:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError:
        return float("nan")
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


# ---------------------------------------------------------------------- kills

SHORT_SCENARIO = {
    "tts_worker": "mid_speech",  # the utterance in flight dies with it
    "supervisor": "mid_speech",  # playout goes on while the session is adopted
    "router": "mid_speech",
    "vad": "mid_utterance",  # the speech in flight is the loss allowed
    "asr": "mid_utterance",
    "broker": "mid_utterance",  # microphone audio crosses its proxy
}
"""``--short``: each kind killed in the scenario that tests it hardest (the full run: both)."""


async def kill_trial(
    stack: LocalStack, kind: str, scenario: str, question: bytes
) -> dict[str, Any]:
    """One kill of ``kind`` with the bot speaking (``mid_speech``) or the person speaking
    (``mid_utterance``); see the module docstring."""
    client = await Client.connect(stack.url)
    record: dict[str, Any] = {"kind": kind, "scenario": scenario}
    in_flight: asyncio.Task[Any]
    if scenario == "mid_speech":
        sent = time.monotonic()
        in_flight = asyncio.create_task(client.say(LONG, 30))
        await client.wait_for(lambda e: e["type"] == "tts_start", 10, sent)
        await asyncio.sleep(1.0)
    else:
        in_flight = asyncio.create_task(client.speak(question))
        await asyncio.sleep(1.0)  # halfway through the question
    killed = await asyncio.to_thread(kill, stack, kind)
    if killed is None:
        record["error"] = f"no {kind} process found"
        return record
    t0 = time.monotonic()
    if scenario == "mid_speech":
        reason, _ = await in_flight
        record["in_flight"] = reason
        record["in_flight_ended_s"] = round(time.monotonic() - t0, 2)
    else:
        await in_flight
        answered = await client.wait_for(
            lambda e: e["type"] in ("tts_start", "error"), 10, t0 - 1.0
        )
        if answered is None:
            record["in_flight"] = "lost"  # the speech in flight: the one loss allowed
        else:
            event = answered[1]
            record["in_flight"] = "replied" if event["type"] == "tts_start" else event["code"]
            if event["type"] == "tts_start":  # the reply plays out before the next text
                uid = event["utterance_id"]
                await client.wait_for(
                    lambda e: e["type"] == "tts_end" and e["utterance_id"] == uid, 30, t0 - 1.0
                )
    # The next text, from the kill or, if later, the end of the utterance in flight (a text
    # waits for the one playing, as it always does).
    after = time.monotonic()
    record["unanswered_within_bound"] = 0
    record["text_turn_ms"] = None
    while time.monotonic() - t0 < 40 and client.closed_at is None:
        reason, answer_s = await client.say("Are you back with me now?", ANSWER_S + 30)
        if answer_s > ANSWER_S:
            record["unanswered_within_bound"] += 1
        if reason == "completed":
            record["text_turn_ms"] = round(1000 * (_last_start(client) - after), 0)
            break
        await asyncio.sleep(0.25)
    record["spoken_turn_ms"] = None
    while time.monotonic() - t0 < 60 and client.closed_at is None:
        began = time.monotonic()
        await client.speak(question)
        answered = await client.wait_for(lambda e: e["type"] in ("tts_start", "error"), 10, began)
        if answered is not None and answered[1]["type"] == "tts_start":
            record["spoken_turn_ms"] = round(1000 * (answered[0] - t0), 0)
            await client.wait_for(lambda e: e["type"] == "tts_end", 30, answered[0])
            break
    ends = client.of("session_end")
    record["session_ended"] = ends[0]["reason"] if ends else None
    record["errors"] = sorted({e["code"] for e in client.of("error", t0)})
    if client.closed_at is None:
        await client.close()
    await asyncio.to_thread(wait_back, stack, kind)
    return record


def _last_start(client: Client) -> float:
    return max(at for at, e in client.events if e["type"] == "tts_start")


def kill(stack: LocalStack, kind: str) -> int | None:
    """SIGKILL the process of ``kind`` (the broker is then started again here)."""
    if kind == "broker":
        broker = stack.procs[0]
        broker.send_signal(signal.SIGKILL)
        broker.wait(10)
        stack.procs[0] = stack.spawn(["broker"])
        return broker.pid
    pids = stack.actor_pids().get(kind)
    if not pids:
        return None
    os.kill(pids[0], signal.SIGKILL)
    return pids[0]


def wait_back(stack: LocalStack, kind: str) -> None:
    deadline = time.monotonic() + 60
    kinds = list(stack.kinds)
    while time.monotonic() < deadline:
        live = stack.actor_pids()
        if all(live.get(k) for k in kinds):
            return
        time.sleep(0.5)
    log(f"{kind}: the stack did not come back whole within 60 s")


# ---------------------------------------------------------------------- main


def tracebacks(log_dir: Path) -> dict[str, int]:
    counts = {}
    for path in sorted(log_dir.glob("*.log")):
        n = path.read_text(errors="replace").count("Traceback")
        if n:
            counts[path.stem] = n
    return counts


async def run(args: argparse.Namespace, stack: LocalStack) -> dict[str, Any]:
    out: dict[str, Any] = {}
    log("bad input")
    out["bad_input"] = await bad_input(stack.url, stack.http_port)
    out["bad_input"]["tracebacks"] = tracebacks(stack.log_dir)
    log(f"soak: {args.sessions} sessions for {args.minutes} min")
    out["soak"] = await soak(stack, args.sessions, args.minutes)
    question = synthesize(QUESTION)
    kills = []
    for kind in filter(None, args.kinds.split(",")):
        scenarios = (args.scenarios[kind],) if args.scenarios else ("mid_speech", "mid_utterance")
        for scenario in scenarios:
            log(f"kill -9 {kind} ({scenario})")
            kills.append(await kill_trial(stack, kind, scenario, question))
            log(f"  {kills[-1]}")
    out["kills"] = kills
    out["tracebacks"] = tracebacks(stack.log_dir)
    return out


def verdict(out: dict[str, Any]) -> dict[str, Any]:
    bad, soaked, kills = out["bad_input"], out["soak"], out["kills"]
    growth = [a["rss_growth_after_warmup_pct"] for a in soaked["actors"].values()]
    fd_growth = [a["fds_end"] - a["fds_after_warmup"] for a in soaked["actors"].values()]
    hanging = [
        k
        for k in kills
        if k.get("unanswered_within_bound")
        or k.get("in_flight") == "silent"
        or (k["session_ended"] is None and k["text_turn_ms"] is None)
    ]
    return {
        "bad_input_all_as_expected": bad["as_expected"] == bad["classes"],
        "bad_input_no_drop_no_traceback": not bad["dropped_connections"] and not bad["tracebacks"],
        "soak_every_utterance_whole": soaked["completed"] == soaked["utterances"]
        and not soaked["frames_mismatch"],
        "soak_rss_growth_under_2pct": all(g < 2.0 for g in growth),
        "soak_no_fd_growth": all(g <= 0 for g in fd_growth),
        "no_session_left_hanging": not hanging,
        "tracebacks": out["tracebacks"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="soak length")
    parser.add_argument("--sessions", type=int, default=6, help="soak sessions")
    parser.add_argument("--kinds", default=",".join(KINDS), help="actor kinds to kill")
    parser.add_argument(
        "--short",
        action="store_true",
        help="0.25 min soak, 2 sessions, each kind killed in the one scenario of SHORT_SCENARIO",
    )
    args = parser.parse_args()
    if args.short:
        args.minutes, args.sessions = 0.25, 2
    args.scenarios = SHORT_SCENARIO if args.short else None
    stack = LocalStack(
        "bench_chaos",
        ["gateway", "supervisor", "router", "vad", "asr", "tts_worker"],
        # The worker's metrics: its phrase cache's fill marks the end of its warm-up.
        actors=f"  tts_worker:\n    metrics_port: {WORKER_METRICS_PORT}\n",
        keep_logs=True,
    )

    def ready() -> bool | None:
        body = stack.gateway_ready()
        return True if body and body.get("voice_in") else None

    stack.start(ready)
    try:
        out = asyncio.run(run(args, stack))
    finally:
        stack.close()
    result = {
        "benchmark": "bench_chaos",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        **out,
        "met": verdict(out),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
