"""``duplex chat``: a terminal client of the WebSocket protocol.

Type a line and hear it (saved as WAV files with ``--out``; this client plays no sound device),
or pass ``--say TEXT`` (repeatable) to speak and exit, or ``--send-wav FILE`` to stream a WAV as
microphone audio in real time: a spoken conversation (transcripts, replies, barge-in when the
WAV talks over the bot); the microphone then stays open, sending silence, until the stack has
answered and been quiet for a moment (``--wait`` seconds at most). Prints one line per event
with timings (first audio after the text was sent), or the raw JSON events with ``--json``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soxr
import websockets

from bus.audio_format import FRAME_S, MIC, write_wav


@dataclass(slots=True)
class ChatState:
    """What the client has seen."""

    audio: dict[str, bytearray] = field(default_factory=dict)
    current: str = ""
    sent_at: list[float] = field(default_factory=list)
    first_audio: dict[str, float] = field(default_factory=dict)
    ended: int = 0
    expected: int = 0
    """Utterances to wait for before leaving (``--say``)."""
    all_ended: asyncio.Event = field(default_factory=asyncio.Event)
    errors: list[dict[str, Any]] = field(default_factory=list)
    state: str = "LISTENING"
    last_event: float = field(default_factory=time.monotonic)
    speaking: bool = False
    """The person is speaking (between VAD's speech_start and speech_end)."""


async def chat(
    url: str,
    *,
    say: list[str],
    send_wav: Path | None,
    out_dir: Path | None,
    as_json: bool,
    voice: str,
    audio_format: str,
    wait_s: float = 30.0,
    dialogue: str | None = None,
    token: str = "",
) -> int:
    """Run the client; returns the process exit code. ``token``: the gateway's access token."""
    state = ChatState(expected=len(say))
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with websockets.connect(url, max_size=2**21, additional_headers=headers) as ws:
        config: dict[str, Any] = {"type": "session_config", "audio_format": audio_format}
        if voice:
            config["voice"] = voice
        if dialogue:
            config["dialogue"] = dialogue
        if send_wav is not None:
            config["input_sample_rate"] = MIC.sample_rate
        await ws.send(json.dumps(config))
        receiver = asyncio.create_task(_receive(ws, state, out_dir, as_json))
        try:
            if send_wav is not None:
                await _stream_wav(ws, send_wav)
                await _listen_for_answers(ws, state, wait_s)
            for text in say:
                state.sent_at.append(time.monotonic())
                await ws.send(json.dumps({"type": "text", "text": text}))
            if say or send_wav is not None:
                if say:
                    await asyncio.wait(
                        [asyncio.ensure_future(state.all_ended.wait()), receiver],
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                else:
                    await asyncio.sleep(0.3)  # the tail of the last event
            else:
                await _interactive(ws, state)
            await ws.send(json.dumps({"type": "end"}))
            await asyncio.wait_for(receiver, 5)
        except (TimeoutError, websockets.ConnectionClosed):
            pass
        finally:
            receiver.cancel()
    return 1 if state.errors and say else 0


async def _interactive(ws: Any, state: ChatState) -> None:
    print(
        "type a line to hear it; /pause /resume /stop control playout; /quit ends", file=sys.stderr
    )
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or line.strip() == "/quit":
            return
        command = line.strip()
        if command in ("/pause", "/resume", "/stop"):
            await ws.send(json.dumps({"type": "control", "command": command[1:].upper()}))
        elif command:
            state.sent_at.append(time.monotonic())
            await ws.send(json.dumps({"type": "text", "text": command}))


async def _receive(ws: Any, state: ChatState, out_dir: Path | None, as_json: bool) -> None:
    async for message in ws:
        if isinstance(message, bytes):
            _audio(state, message)
            continue
        event = json.loads(message)
        kind = event.get("type")
        if kind == "audio":  # the JSON audio format
            import base64

            _audio(state, base64.b64decode(event["pcm"]))
            continue
        state.last_event = time.monotonic()
        if kind == "state":
            state.state = event["state"]
        elif kind == "vad":
            state.speaking = event["event"] == "speech_start"
        if kind == "tts_start":
            state.current = event["utterance_id"]
            state.audio[state.current] = bytearray()
        elif kind == "tts_end":
            state.ended += 1
            _save(state, event["utterance_id"], out_dir)
            if state.ended >= state.expected:
                state.all_ended.set()
        elif kind == "error":
            state.errors.append(event)
        if kind == "session_end":
            _print(event, state, as_json)
            return
        _print(event, state, as_json)


def _audio(state: ChatState, pcm: bytes) -> None:
    if state.current not in state.first_audio and state.sent_at:
        index = min(len(state.first_audio), len(state.sent_at) - 1)
        state.first_audio[state.current] = time.monotonic() - state.sent_at[index]
    state.audio.setdefault(state.current, bytearray()).extend(pcm)


def _save(state: ChatState, utterance_id: str, out_dir: Path | None) -> None:
    if out_dir is None or not state.audio.get(utterance_id):
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    write_wav(out_dir / f"{utterance_id}.wav", bytes(state.audio[utterance_id]))


def _print(event: dict[str, Any], state: ChatState, as_json: bool) -> None:
    kind = event.get("type")
    if as_json:
        if kind == "tts_end" and event["utterance_id"] in state.first_audio:
            event = {
                **event,
                "first_audio_ms": round(state.first_audio[event["utterance_id"]] * 1000, 1),
            }
        print(json.dumps(event), flush=True)
        return
    if kind == "state":
        line = f"state      {event['state']}"
    elif kind == "tts_start":
        line = f"speaking   {event['utterance_id']}  {event.get('text', '')!r}"
    elif kind == "tts_end":
        first = state.first_audio.get(event["utterance_id"])
        timing = f"  first audio {first * 1000:.0f} ms" if first is not None else ""
        line = (
            f"done       {event['utterance_id']}  {event['reason']}  "
            f"{event['frames'] * FRAME_S:.2f} s{timing}"
        )
    elif kind == "error":
        line = f"error      {event['code']}: {event['message']}"
    elif kind == "session_start":
        line = f"session    {event['session_id']}"
    elif kind == "transcript":
        line = f"heard      {event['text']!r}{'' if event.get('final') else ' ...'}"
    else:
        line = f"{kind:10} {json.dumps({k: v for k, v in event.items() if k != 'type'})}"
    print(line, flush=True)


async def _listen_for_answers(ws: Any, state: ChatState, wait_s: float) -> None:
    """Keep the microphone open (silence, in real time) until the stack is LISTENING with
    nothing said for 1.5 s, or ``wait_s`` passed: the last turn gets its answer."""
    quiet = bytes(MIC.frame_bytes)
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < wait_s:
        idle = time.monotonic() - state.last_event
        if state.state == "LISTENING" and not state.speaking and idle > 1.5:
            return
        i += 1
        await asyncio.sleep(max(0.0, start + i * FRAME_S - time.monotonic()))
        await ws.send(quiet)


async def _stream_wav(ws: Any, path: Path) -> None:
    """Send a WAV file as microphone audio (16 kHz mono s16le), 20 ms at a time, in real time.
    Any rate and channel count is taken (mixed down, resampled), which is why this is not
    :func:`~bus.audio_format.read_wav`: that refuses what is not mono."""
    with wave.open(str(path)) as wav:
        rate, channels = wav.getframerate(), wav.getnchannels()
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV files are supported")
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    audio = pcm.reshape(-1, channels).mean(axis=1).astype(np.float32) / 32768
    if rate != MIC.sample_rate:
        audio = soxr.resample(audio, rate, MIC.sample_rate)
    samples = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    step = MIC.frame_samples
    start = time.monotonic()
    for i, offset in enumerate(range(0, len(samples), step)):
        await asyncio.sleep(max(0.0, start + i * FRAME_S - time.monotonic()))
        await ws.send(samples[offset : offset + step].tobytes())
