"""One WebSocket client's session at the gateway: its settings, its playout, what it is sent."""

from __future__ import annotations

import base64
import bisect
import contextlib
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bus.limits import PeerRateLimit
from transports.mic import MicInput
from transports.playout import Playout

if TYPE_CHECKING:
    from actors.gateway import Gateway

CREDIT_BATCH = 5
"""Frames played before the worker is granted as many more."""
MESSAGE_RATE = 100.0
"""Client messages per second allowed on average (50/s is 20 ms audio chunks)."""
MESSAGE_BURST = 400.0


@dataclass(slots=True)
class SessionStats:
    """One session's voice figures, sent to its client as ``{"type": "metrics", ...}``."""

    barge_ins: int = 0
    false_interruptions: int = 0
    barge_in_ms: float | None = None
    """Last barge-in: the person's first speech sample received → playout held."""
    turn_latency_ms: float | None = None
    """Last reply: the person's end of speech received → first reply frame sent."""
    asr_rtf: float | None = None
    """Real-time factor of the last final transcript."""
    held: bool = field(default=False, repr=False)

    def message(self) -> dict[str, Any]:
        return {
            "type": "metrics",
            "barge_ins": self.barge_ins,
            "false_interruptions": self.false_interruptions,
            "barge_in_ms": self.barge_in_ms,
            "turn_latency_ms": self.turn_latency_ms,
            "asr_rtf": self.asr_rtf,
        }


class ClientSession:
    """A connected client, as the gateway sees it."""

    def __init__(self, session_id: str, ws: web.WebSocketResponse, gateway: Gateway) -> None:
        self.session_id = session_id
        self.ws = ws
        self.gateway = gateway
        self.voice = ""
        self.audio_format = "binary"
        self.input_sample_rate = 16_000
        self.dialogue = "echo"
        self.supervisor = ""
        self.sequence = 0
        """JSON-audio frames sent, for their ``sequence`` field."""
        self.mic = MicInput(self.input_sample_rate)
        self.audio_started: float | None = None
        """When the first microphone audio came (to bound how far ahead of real time it runs)."""
        self.arrivals: deque[tuple[int, float]] = deque(maxlen=4096)
        """(stream sample after a chunk, monotonic time it arrived): when did sample N come."""
        self.stats = SessionStats()
        self.rate = PeerRateLimit(MESSAGE_RATE, MESSAGE_BURST)
        self.playout: Playout
        self._uncredited = 0

    def session_start(self) -> dict[str, Any]:
        return {
            "type": "session_start",
            "session_id": self.session_id,
            "protocol": 1,
            "audio_out": {"sample_rate": 48000, "frame_ms": 20, "encoding": "pcm_s16le"},
        }

    def configure(self, config: dict[str, Any]) -> None:
        self.voice = config.get("voice", self.voice) or ""
        self.audio_format = config.get("audio_format", self.audio_format)
        self.input_sample_rate = config.get("input_sample_rate", self.input_sample_rate)
        self.mic.set_rate(self.input_sample_rate)
        self.dialogue = config.get("dialogue", self.dialogue)

    async def send_frame(self, utterance_id: str, pcm: bytes) -> None:
        """One 20 ms frame to the client, in its audio format; credits the worker."""
        if self.ws.closed:
            return
        try:
            if self.audio_format == "json":
                await self.ws.send_json(
                    {
                        "type": "audio",
                        "pcm": base64.b64encode(pcm).decode("ascii"),
                        "sample_rate": 48000,
                        "frame_ms": 20,
                        "sequence": self.sequence,
                    }
                )
                self.sequence += 1
            else:
                await self.ws.send_bytes(pcm)
        except ConnectionError:
            return
        self._uncredited += 1
        if self._uncredited >= CREDIT_BATCH:
            self.gateway.credit(self, utterance_id, self._uncredited)
            self._uncredited = 0

    def arrived(self, stream_sample: int) -> float | None:
        """When the chunk holding 16 kHz ``stream_sample`` arrived from the client."""
        ends = [end for end, _ in self.arrivals]
        i = bisect.bisect_right(ends, stream_sample)
        return self.arrivals[i][1] if i < len(self.arrivals) else None

    async def send_json(self, message: dict[str, Any]) -> None:
        if not self.ws.closed:
            with contextlib.suppress(ConnectionError):
                await self.ws.send_json(message)

    async def error(self, code: str, message: str) -> None:
        await self.send_json({"type": "error", "code": code, "message": message[:1000]})

    async def end(self, reason: str) -> None:
        """``session_end``, then close the connection."""
        await self.send_json(
            {"type": "session_end", "session_id": self.session_id, "reason": reason}
        )
        await self.ws.close()
