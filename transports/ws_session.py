"""One WebSocket client's session at the gateway: its settings, its playout, what it is sent."""

from __future__ import annotations

import base64
import contextlib
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bus.limits import PeerRateLimit
from transports.playout import Playout

if TYPE_CHECKING:
    from actors.gateway import Gateway

CREDIT_BATCH = 5
"""Frames played before the worker is granted as many more."""
MESSAGE_RATE = 100.0
"""Client messages per second allowed on average (50/s is 20 ms audio chunks)."""
MESSAGE_BURST = 400.0


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
        self.audio_in_bytes = 0
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
