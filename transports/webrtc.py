"""The WebRTC transport (aiortc): a browser's peer connection as a second adapter over the
client-session core, with the same protocol events as the WebSocket.

Signalling is one round trip on the gateway's port: ``POST /webrtc/offer`` with the browser's
offer (its ICE candidates gathered into it: aiortc cannot trickle) returns the answer and the
``session_id``; ``DELETE /webrtc/{session_id}`` ends the session. Per session: the bot's audio
goes out on one :class:`~transports.webrtc_audio.BotTrack`, the microphone comes in on the
browser's audio track (Opus, decoded by aiortc) into the same path as WebSocket microphone
audio, and the data channel ``events`` carries exactly the protocol's JSON messages both ways
(events are queued until it opens).

ICE servers are what the settings say (none by default: aiortc's default is a public STUN
server that an offline host waits seconds for). A peer that does not connect within
``connect_timeout_s``, fails, or sends no microphone audio for ``silence_timeout_s`` is closed
and its session ended; closing cancels its tasks and the peer connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import aioice.ice
from aiohttp import web
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from prometheus_client import Counter, Histogram

from bus.audio_format import BOT
from bus.logs import kv
from transports import protocol
from transports.protocol import ClientError
from transports.session import ClientSession
from transports.sessions import SessionHub
from transports.webrtc_audio import BotTrack, MicReader, install_pass_through

MAX_SDP_CHARS = 64 * 1024
EVENTS_CHANNEL = "events"
MAX_INBOUND_MESSAGES = 256
"""Data channel messages waiting for the session at most; more get ``RATE_LIMITED``."""
CLOSE_FLUSH_S = 0.5
"""Closing waits this long at most for queued events (``session_end``) to leave."""

log = logging.getLogger("duplex.webrtc")


@dataclass(frozen=True, slots=True)
class WebRtcOptions:
    """The gateway's WebRTC settings (``actors.gateway.webrtc_*`` in topology.yaml)."""

    ice_servers: tuple[dict[str, Any], ...] = ()
    """``RTCIceServer`` fields (``urls``, ``username``, ``credential``): STUN/TURN where a
    deployment needs them; none on a LAN or one machine."""
    ice_addresses: tuple[str, ...] = ()
    """Host addresses offered as ICE candidates; empty: every interface (loopback too when
    there is no other)."""
    max_sessions: int = 50
    connect_timeout_s: float = 10.0
    silence_timeout_s: float = 10.0
    jitter_buffer: Literal["pass_through", "aiortc"] = "pass_through"
    max_pending_events: int = 512
    """Events held until the data channel opens; a session that exceeds it is ended."""
    max_buffered_bytes: int = 1024 * 1024
    """Events the browser has not taken yet (a stalled channel) before the session is ended."""

    def __post_init__(self) -> None:
        for server in self.ice_servers:
            if not isinstance(server.get("urls"), str | list) or set(server) - {
                "urls",
                "username",
                "credential",
            }:
                raise ValueError(f"an ICE server is {{urls, username?, credential?}}: {server!r}")
        if self.max_sessions < 1 or self.connect_timeout_s <= 0 or self.silence_timeout_s <= 0:
            raise ValueError("webrtc max_sessions and timeouts must be positive")


class WebRtcMetrics:
    def __init__(self, registry: Any) -> None:
        self.connect = Histogram(
            "duplex_webrtc_connect_seconds",
            "Offer received -> peer connection connected",
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0),
            registry=registry,
        )
        self.closed = Counter(
            "duplex_webrtc_sessions_closed_total",
            "WebRTC sessions closed, by reason",
            ["reason"],
            registry=registry,
        )
        self.mic_dropped = Counter(
            "duplex_webrtc_mic_frames_dropped_total",
            "Decoded microphone frames dropped because the reader fell behind",
            registry=registry,
        )


class WebRtcLink:
    """A :class:`~transports.session.ClientLink` over one peer connection."""

    def __init__(self, track: BotTrack, options: WebRtcOptions, on_close: Callable[[str], Any]):
        self.track = track
        self.options = options
        self.on_close = on_close
        self.channel: RTCDataChannel | None = None
        self._pending: deque[str] = deque()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def attach(self, channel: RTCDataChannel) -> None:
        """The browser's events channel: what was queued goes out now."""
        self.channel = channel
        while self._pending and channel.readyState == "open":
            channel.send(self._pending.popleft())

    async def send_event(self, event: dict[str, Any]) -> None:
        if self._closed:
            return
        text = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
        channel = self.channel
        if channel is None or channel.readyState != "open":
            if len(self._pending) >= self.options.max_pending_events:
                self.on_close("events_backlog")
                return
            self._pending.append(text)
        elif channel.bufferedAmount > self.options.max_buffered_bytes:
            self.on_close("slow_client")  # the browser stopped taking events
        else:
            channel.send(text)

    async def send_audio(self, pcm: bytes) -> None:
        if not self._closed:
            await self.track.put(pcm)

    def backlog_bytes(self) -> int:
        """The events channel's (audio is paced by the track; a slow channel closes itself)."""
        return self.channel.bufferedAmount if self.channel is not None else 0

    def discard_audio(self) -> int:
        return self.track.discard()

    async def close(self) -> None:
        """Queued events (``session_end``) get a moment to leave, then the peer closes."""
        channel = self.channel
        if channel is not None and channel.readyState == "open" and channel.bufferedAmount:
            drained = asyncio.Event()
            channel.bufferedAmountLowThreshold = 0
            channel.once("bufferedamountlow", drained.set)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(drained.wait(), CLOSE_FLUSH_S)
        self.on_close("session_end")


@dataclass(slots=True)
class _Peer:
    pc: RTCPeerConnection
    link: WebRtcLink
    session: ClientSession
    opened_at: float = field(default_factory=time.monotonic)
    reader: MicReader | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    inbound: asyncio.Queue[str | bytes] = field(
        default_factory=lambda: asyncio.Queue(MAX_INBOUND_MESSAGES)
    )
    closing: bool = False


class WebRtcServer:
    """The gateway's WebRTC sessions and their signalling routes."""

    def __init__(self, hub: SessionHub, options: WebRtcOptions, registry: Any) -> None:
        self.hub = hub
        self.options = options
        self.metrics = WebRtcMetrics(registry)
        self.peers: dict[str, _Peer] = {}
        _restrict_host_addresses(options.ice_addresses)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/webrtc/offer", self.offer)
        app.router.add_delete("/webrtc/{session_id}", self.delete)

    # ------------------------------------------------------------------ signalling

    async def offer(self, request: web.Request) -> web.Response:
        try:
            sdp = _parse_offer(await request.read())
        except ClientError as exc:
            return _error(400, exc.code, str(exc))
        if len(self.peers) >= self.options.max_sessions:
            return _error(503, "BUSY", "this gateway serves no more WebRTC sessions")
        servers = [RTCIceServer(**server) for server in self.options.ice_servers]
        pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        track = BotTrack()
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            audio = [t for t in pc.getTransceivers() if t.kind == "audio"]
            if not audio:
                raise ClientError("INVALID_SDP", "the offer has no audio")
            pc.addTrack(track)
            mic = audio[0].receiver.track  # None when the page sends no microphone
            if self.options.jitter_buffer == "pass_through":
                install_pass_through(audio[0].receiver)
            await pc.setLocalDescription(await pc.createAnswer())
        except ClientError as exc:
            await pc.close()
            return _error(400, exc.code, str(exc))
        except Exception as exc:  # aiortc raises ValueError and others on a bad SDP
            await pc.close()
            return _error(400, "INVALID_SDP", f"the offer was refused: {exc}"[:300])
        peer = await self._open(pc, track, mic)
        answer = pc.localDescription
        body = {"sdp": answer.sdp, "type": answer.type, "session_id": peer.session.session_id}
        return web.json_response(body)

    async def delete(self, request: web.Request) -> web.Response:
        peer = self.peers.get(request.match_info["session_id"])
        if peer is None:
            return _error(404, "NOT_FOUND", "no such WebRTC session")
        await peer.session.end("client_end")
        return web.Response(status=204)

    async def shutdown(self) -> None:
        for peer in list(self.peers.values()):
            await self._close(peer, "shutdown")

    # ------------------------------------------------------------------ one peer

    async def _open(
        self, pc: RTCPeerConnection, track: BotTrack, mic: MediaStreamTrack | None
    ) -> _Peer:
        holder: list[_Peer] = []

        def close_soon(reason: str) -> None:
            if holder:
                self._close_soon(holder[0], reason)

        link = WebRtcLink(track, self.options, close_soon)
        session = await self.hub.open(link, transport="webrtc")
        session.mic.set_rate(BOT.sample_rate)  # the browser's Opus decodes to 48 kHz
        peer = _Peer(pc, link, session)
        holder.append(peer)
        self.peers[session.session_id] = peer

        if mic is not None:
            peer.reader = MicReader(mic, session.microphone, self.metrics.mic_dropped.inc)
            peer.tasks.append(asyncio.create_task(peer.reader.run()))

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            if channel.label != EVENTS_CHANNEL or link.channel is not None:
                return
            channel.on("message", lambda message: self._inbound(peer, message))
            channel.on("close", lambda: self._close_soon(peer, "client_closed"))
            link.attach(channel)

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected":
                self.metrics.connect.observe(time.monotonic() - peer.opened_at)
            elif pc.connectionState in ("failed", "closed"):
                self._close_soon(peer, f"peer_{pc.connectionState}")

        peer.tasks.append(asyncio.create_task(self._commands(peer)))
        peer.tasks.append(asyncio.create_task(self._watch(peer)))
        log.info("webrtc session", extra=kv(session=session.session_id))
        return peer

    def _inbound(self, peer: _Peer, message: str | bytes) -> None:
        try:
            peer.inbound.put_nowait(message)
        except asyncio.QueueFull:
            task = asyncio.create_task(peer.session.error("RATE_LIMITED", "too many messages"))
            peer.tasks.append(task)

    async def _commands(self, peer: _Peer) -> None:
        """The data channel's messages, one at a time and in order."""
        session = peer.session
        while True:
            message = await peer.inbound.get()
            try:
                if not isinstance(message, str):
                    raise ClientError(
                        "INVALID_MESSAGE", "the events channel carries JSON text only"
                    )
                command = protocol.parse_text_message(message, self.hub.max_text_chars)
                if isinstance(command, protocol.SessionConfigCommand):
                    command = await _media_config(session, command)
            except ClientError as exc:
                await session.error(exc.code, str(exc))
                continue
            await session.handle(command)

    async def _watch(self, peer: _Peer) -> None:
        """Close a peer that never connects or whose microphone goes silent."""
        options, pc = self.options, peer.pc
        await asyncio.sleep(options.connect_timeout_s)
        if pc.connectionState != "connected":
            self._close_soon(peer, "connect_timeout")
            return
        while True:
            await asyncio.sleep(min(1.0, options.silence_timeout_s / 2))
            reader = peer.reader
            if reader is not None and (
                time.monotonic() - reader.last_frame_at > options.silence_timeout_s
            ):
                self._close_soon(peer, "peer_silent")
                return

    def _close_soon(self, peer: _Peer, reason: str) -> None:
        if not peer.closing:
            peer.closing = True
            asyncio.get_running_loop().create_task(self._close(peer, reason))

    async def _close(self, peer: _Peer, reason: str) -> None:
        peer.closing = True
        session = peer.session
        if self.peers.pop(session.session_id, None) is None:
            return
        self.metrics.closed.labels(reason=reason).inc()
        log.info("webrtc session closed", extra=kv(session=session.session_id, reason=reason))
        peer.link._closed = True
        self.hub.close(session, reason if reason != "session_end" else "client_closed")
        current = asyncio.current_task()
        for task in peer.tasks:
            if task is not current:
                task.cancel()
        peer.link.track.stop()
        with contextlib.suppress(Exception):
            await peer.pc.close()


async def _media_config(
    session: ClientSession, command: protocol.SessionConfigCommand
) -> protocol.SessionConfigCommand:
    """Audio formats are the media tracks' here: those fields are refused, the rest applies."""
    if command.audio_format is None and command.input_sample_rate is None:
        return command
    await session.error(
        "INVALID_MESSAGE", "audio_format and input_sample_rate do not apply to WebRTC"
    )
    return dataclasses.replace(command, audio_format=None, input_sample_rate=None)


def _parse_offer(body: bytes) -> str:
    try:
        offer = json.loads(body)
    except (ValueError, RecursionError):
        raise ClientError("INVALID_MESSAGE", "the body must be JSON") from None
    if not isinstance(offer, dict) or offer.get("type") != "offer":
        raise ClientError("INVALID_MESSAGE", 'expected {"sdp": ..., "type": "offer"}')
    sdp = offer.get("sdp")
    if not isinstance(sdp, str) or not sdp.strip() or len(sdp) > MAX_SDP_CHARS:
        raise ClientError("INVALID_SDP", f'"sdp" must be an SDP offer of at most {MAX_SDP_CHARS}')
    return sdp


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


_gather_host_addresses = aioice.ice.get_host_addresses


def _restrict_host_addresses(addresses: tuple[str, ...]) -> None:
    """Make aioice (process-wide) offer ``addresses``, or every interface's with loopback as a
    last resort: aioice never gathers loopback, and a host with nothing else never connects."""

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        if addresses:
            return [a for a in addresses if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]
        return _gather_host_addresses(use_ipv4, use_ipv6) or (["127.0.0.1"] if use_ipv4 else [])

    aioice.ice.get_host_addresses = host_addresses
