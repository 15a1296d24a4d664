"""The WebSocket transport (aiohttp): a thin adapter over the client-session core.

Text messages are the protocol's JSON (docs/protocol.md), binary messages are microphone audio
in, and bot audio out is one binary message per 20 ms frame.

A client that sends nothing for :class:`SilenceLimits` ``first_message_s`` after the upgrade,
or ``idle_s`` after its last message, gets ``error`` ``TIMEOUT`` and ``session_end`` reason
``first_message_timeout`` / ``idle_timeout``, counted in ``duplex_gateway_timeouts_total``. The
clock stops while the bot speaks: the silence counts from the later of the client's last
message and the bot's last audio frame, and an utterance in progress (``speaking``: routing,
playing, paused or held) never times out. A peer that is gone is found by the ping heartbeat.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web
from prometheus_client import Counter

from transports import protocol
from transports.protocol import ClientError
from transports.session import ClientSession
from transports.sessions import SessionHub

MAX_MESSAGE_BYTES = protocol.MAX_AUDIO_MESSAGE_BYTES
HEARTBEAT_S = 30.0
TIMEOUT_CODE = "TIMEOUT"
CLOSING = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)
"""What ends the receive loop (as ``async for`` over an aiohttp WebSocket ends)."""


@dataclass(frozen=True, slots=True)
class SilenceLimits:
    """How long a client may send nothing while the bot is silent, seconds."""

    first_message_s: float = 30.0
    """After the upgrade, before its first message."""
    idle_s: float = 300.0
    """After its last message."""


class WebSocketLink:
    """A :class:`~transports.session.ClientLink` over one aiohttp WebSocket."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.audio_sent_at = 0.0
        """``time.monotonic()`` of the last bot audio frame sent (0: none yet)."""

    @property
    def closed(self) -> bool:
        return self.ws.closed

    async def send_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "audio":  # a frame in the JSON audio format
            self.audio_sent_at = time.monotonic()
        if not self.ws.closed:
            with contextlib.suppress(ConnectionError):
                await self.ws.send_json(event)

    async def send_audio(self, pcm: bytes) -> None:
        self.audio_sent_at = time.monotonic()
        if not self.ws.closed:
            with contextlib.suppress(ConnectionError):
                await self.ws.send_bytes(pcm)

    def discard_audio(self) -> None:
        """The client buffers what it was sent; it drops it on ``barge_in``/``tts_end``."""

    async def close(self) -> None:
        await self.ws.close()


async def serve(
    request: web.Request,
    hub: SessionHub,
    silence: SilenceLimits,
    timeouts: Counter,
) -> web.WebSocketResponse:
    """Serve one client until it goes, or until it has been silent too long (``timeouts``
    counts those, by kind)."""
    ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, heartbeat=HEARTBEAT_S)
    await ws.prepare(request)
    link = WebSocketLink(ws)
    session = await hub.open(link, transport="websocket")
    reason = "client_closed"
    opened_at = time.monotonic()
    heard_at: float | None = None
    """When the client's last message came; None before its first."""
    busy_at = 0.0
    """When the clock last found an utterance in progress."""
    try:
        while True:
            limit = silence.first_message_s if heard_at is None else silence.idle_s
            heard = opened_at if heard_at is None else heard_at
            quiet_since = max(heard, link.audio_sent_at, busy_at)
            left = quiet_since + limit - time.monotonic()
            if left <= 0:
                if session.speaking is not None:  # routing, playing, paused or held
                    busy_at = time.monotonic()
                    continue
                reason = "first_message_timeout" if heard_at is None else "idle_timeout"
                await _time_out(session, reason, limit, timeouts)
                break
            try:
                frame = await ws.receive(timeout=left)
            except TimeoutError:
                continue
            if frame.type in CLOSING:
                break
            heard_at = time.monotonic()
            try:
                if frame.type == WSMsgType.BINARY:
                    command: protocol.ClientCommand = protocol.parse_audio_message(frame.data)
                elif frame.type == WSMsgType.TEXT:
                    command = protocol.parse_text_message(frame.data, hub.max_text_chars)
                else:
                    raise ClientError("INVALID_MESSAGE", f"unexpected message {frame.type!r}")
            except ClientError as exc:
                await session.error(exc.code, str(exc))
                continue
            await session.handle(command)
    finally:
        hub.close(session, reason)
    return ws


async def _time_out(session: ClientSession, reason: str, limit: float, timeouts: Counter) -> None:
    if reason == "first_message_timeout":
        kind, message = "first_message", f"no message within {limit:g} s of connecting"
    else:
        kind, message = "idle", f"no message for {limit:g} s"
    timeouts.labels(kind=kind).inc()
    await session.error(TIMEOUT_CODE, message)
    await session.end(reason)
