"""The WebSocket transport (aiohttp): a thin adapter over the client-session core.

Text messages are the protocol's JSON (docs/protocol.md), binary messages are microphone audio
in, and bot audio out is one binary message per 20 ms frame.
"""

from __future__ import annotations

import contextlib
from typing import Any

from aiohttp import WSMsgType, web

from transports import protocol
from transports.protocol import ClientError
from transports.sessions import SessionHub

MAX_MESSAGE_BYTES = protocol.MAX_AUDIO_MESSAGE_BYTES
HEARTBEAT_S = 30.0


class WebSocketLink:
    """A :class:`~transports.session.ClientLink` over one aiohttp WebSocket."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws

    @property
    def closed(self) -> bool:
        return self.ws.closed

    async def send_event(self, event: dict[str, Any]) -> None:
        if not self.ws.closed:
            with contextlib.suppress(ConnectionError):
                await self.ws.send_json(event)

    async def send_audio(self, pcm: bytes) -> None:
        if not self.ws.closed:
            with contextlib.suppress(ConnectionError):
                await self.ws.send_bytes(pcm)

    def discard_audio(self) -> None:
        """The client buffers what it was sent; it drops it on ``barge_in``/``tts_end``."""

    async def close(self) -> None:
        await self.ws.close()


async def serve(request: web.Request, hub: SessionHub) -> web.WebSocketResponse:
    """Serve one client until it goes."""
    ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, heartbeat=HEARTBEAT_S)
    await ws.prepare(request)
    session = await hub.open(WebSocketLink(ws), transport="websocket")
    try:
        async for frame in ws:
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
        hub.close(session)
    return ws
