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

import asyncio
import contextlib
import fcntl
import json
import struct
import termios
import time
from collections import deque
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


MAX_QUEUED_BYTES = 8 * 1024 * 1024
"""What may wait to be written to one client; more closes it (the session's backlog rule stops
its audio long before)."""
CLOSE_FLUSH_S = 1.0
"""On close, how long what is queued (``session_end``) may take to leave before the connection
is cut."""


OLDER_PROJECT_EVENTS = frozenset({"session_start", "audio", "session_end", "error"})
"""The events the older project's server sends, all its clients know: in the compatibility
mode (a WebSocket at ``/``) the others are not sent."""


class WebSocketLink:
    """A :class:`~transports.session.ClientLink` over one aiohttp WebSocket. Sends never wait
    on the client: they queue, in order, for a writer task, so that a client that stops
    reading holds up nothing but itself; :meth:`backlog_bytes` says how much it has not taken.
    ``events``: the event types sent (None: all)."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.BaseTransport | None,
        events: frozenset[str] | None = None,
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.events = events
        self._queue: deque[str | bytes] = deque()
        self._queued_bytes = 0
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self.audio_sent_at = 0.0
        """``time.monotonic()`` of the last bot audio frame sent (0: none yet)."""

    @property
    def closed(self) -> bool:
        return self.ws.closed

    async def send_event(self, event: dict[str, Any]) -> None:
        if self.events is not None and event.get("type") not in self.events:
            return
        if event.get("type") == "audio":  # a frame in the JSON audio format
            self.audio_sent_at = time.monotonic()
        self._put(json.dumps(event))

    async def send_audio(self, pcm: bytes) -> None:
        self.audio_sent_at = time.monotonic()
        self._put(pcm)

    def _put(self, item: str | bytes) -> None:
        if self.ws.closed:
            return
        if self._queued_bytes > MAX_QUEUED_BYTES:
            self.abort()
            return
        self._queue.append(item)
        self._queued_bytes += len(item)
        self._drained.clear()
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write())
        self._wake.set()

    async def _write(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):  # (RuntimeError: closing)
            while not self.ws.closed:
                if not self._queue:
                    self._drained.set()
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                item = self._queue[0]
                if isinstance(item, bytes):
                    await self.ws.send_bytes(item)
                else:
                    await self.ws.send_str(item)
                self._queue.popleft()
                self._queued_bytes -= len(item)

    def backlog_bytes(self) -> int:
        """Bytes sent to the client and not taken: queued here, in the transport's buffer and
        in the kernel's send queue (Linux; elsewhere that part is not counted)."""
        backlog = self._queued_bytes
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            backlog += transport.get_write_buffer_size()
            sock = transport.get_extra_info("socket")
            if sock is not None:
                backlog += _unsent_in_kernel(sock.fileno())
        return backlog

    def discard_audio(self) -> None:
        """The client buffers what it was sent; it drops it on ``barge_in``/``tts_end``."""

    async def close(self) -> None:
        """What is queued (``session_end``) leaves first, for :data:`CLOSE_FLUSH_S` at most."""
        if self._queue and self._writer is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), CLOSE_FLUSH_S)
        if self._queue:
            self.abort()
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.ws.close(), CLOSE_FLUSH_S)
        self.abort()  # a close frame the client never acknowledged

    def abort(self) -> None:
        """Cut the connection now (a client that does not read gets no close handshake)."""
        self._queue.clear()
        self._queued_bytes = 0
        if self._writer is not None:
            self._writer.cancel()
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.abort()


def _unsent_in_kernel(fd: int) -> int:
    try:
        raw = fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return 0
    return int(struct.unpack("i", raw)[0])


async def serve(
    request: web.Request,
    hub: SessionHub,
    silence: SilenceLimits,
    timeouts: Counter,
    *,
    older_project: bool = False,
) -> web.WebSocketResponse:
    """Serve one client until it goes, or until it has been silent too long (``timeouts``
    counts those, by kind). ``older_project``: speak the older project's protocol
    (docs/protocol.md, "Clients of the older project")."""
    ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, heartbeat=HEARTBEAT_S)
    await ws.prepare(request)
    events = OLDER_PROJECT_EVENTS if older_project else None
    link = WebSocketLink(ws, request.transport, events)
    session = await hub.open(link, transport="websocket")
    if older_project:
        session.speak_older_protocol()
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
        link.abort()  # the connection is over: the writer goes too
    return ws


async def _time_out(session: ClientSession, reason: str, limit: float, timeouts: Counter) -> None:
    if reason == "first_message_timeout":
        kind, message = "first_message", f"no message within {limit:g} s of connecting"
    else:
        kind, message = "idle", f"no message for {limit:g} s"
    timeouts.labels(kind=kind).inc()
    await session.error(TIMEOUT_CODE, message)
    await session.end(reason)
