"""A gateway's client sessions: opened by transports, fed by the bus.

Every transport (WebSocket now, WebRTC next) opens a :class:`~transports.session.ClientSession`
here with its own :class:`~transports.session.ClientLink` and closes it when the client goes;
the gateway actor hands every bus message to :meth:`SessionHub.on_message`, which gives worker
frames to their utterance streams and everything else to the session it names.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import Counter

from bus.envelope import new_id
from bus.inbound import Inbound
from bus.schema.session import DropSession
from bus.schema.system import Registration, RegistryChange
from transports.session import (
    ClientLink,
    ClientSession,
    SessionBus,
    SessionMetrics,
    StallPolicy,
)
from transports.utterance_stream import StreamClient
from transports.voice_routes import VoiceRoutes


class SessionHub:
    """The sessions of one gateway and the utterance streams they (and HTTP) share."""

    def __init__(
        self,
        bus: SessionBus,
        registry: Any,
        *,
        max_text_chars: int,
        busy_wait_s: float,
        stall: StallPolicy | None = None,
    ) -> None:
        self.bus = bus
        self.max_text_chars = max_text_chars
        self.stall = stall or StallPolicy()
        self.stalled = Counter(
            "duplex_clients_stalled_total",
            "Sessions ended because their client stopped taking its audio",
            registry=registry,
        )
        self.sessions: dict[str, ClientSession] = {}
        self.metrics = SessionMetrics(registry)
        busy_waits = Counter(
            "duplex_route_busy_waits_total",
            "Times a route found every fitting TTS worker saturated and asked again",
            registry=registry,
        )
        self.streams = StreamClient(bus, busy_wait_s=busy_wait_s, on_busy_wait=busy_waits.inc)
        self.voice = VoiceRoutes(bus)
        """Which VAD and ASR hear each session."""

    async def open(self, link: ClientLink, transport: str) -> ClientSession:
        """A new session for a connected client (``session_start`` sent)."""
        session = ClientSession(
            new_id(),
            link,
            transport=transport,
            bus=self.bus,
            streams=self.streams,
            metrics=self.metrics,
            max_text_chars=self.max_text_chars,
            stall=self.stall,
        )
        self.sessions[session.session_id] = session
        self.voice.open(session.session_id)  # before any of its audio: VAD and ASR subscribe
        await session.start()
        return session

    def close(self, session: ClientSession, reason: str = "client_closed") -> None:
        """The client's connection is gone."""
        if self.sessions.pop(session.session_id, None) is not None:
            self.voice.close(session.session_id)
            session.close(reason)

    def on_registry(self, change: RegistryChange, reg: Registration, *, resync: bool) -> None:
        """A registry change: a session's supervisor left (``resync``: missing from a fresh
        snapshot, a broker restart) or a first one came; the last VAD or ASR left (every
        session hears ``VOICE_INPUT_LOST``). (A worker that left is not judged
        here: one only frozen a while must keep its streams; the stream watchdog asks it.)"""
        self.voice.on_registry(change, reg, resync=resync)
        if change is RegistryChange.REMOVED and reg.kind == "supervisor":
            for session in list(self.sessions.values()):
                if session.supervisor == reg.actor_id:
                    self.bus.spawn(session.supervisor_lost(resync=resync))
        elif change is RegistryChange.REMOVED and reg.kind in ("vad", "asr") and not resync:
            if not self.bus.registry.alive(reg.kind):  # no other instance hears them now
                what = "voice activity detection" if reg.kind == "vad" else "speech recognition"
                message = f"{what} ({reg.kind}) stopped: speech is not heard until it is back"
                for session in list(self.sessions.values()):
                    self.bus.spawn(session.error("VOICE_INPUT_LOST", message))
        elif change is RegistryChange.ADDED and reg.kind == "supervisor":
            for session in self.sessions.values():
                if not session.supervisor and session.adopting is None:
                    session.adopt(reg)  # it had none: NO_WORKER when it connected

    async def on_message(self, inbound: Inbound) -> None:
        if await self.streams.on_message(inbound):
            return
        if isinstance(inbound.message, DropSession):  # a VAD or ASR refused a session: full
            kind = self.voice.refused(inbound.env.session, inbound.env.src)
            session = self.sessions.get(inbound.env.session)
            if kind is not None and session is not None:
                what = "voice activity detection" if kind == "vad" else "speech recognition"
                message = f"every {what} ({kind}) instance is full: speech is not heard"
                self.bus.spawn(session.error("VOICE_INPUT_LOST", message))
            return
        session = self.sessions.get(inbound.env.session)
        if session is not None:  # else the session is gone: late messages are dropped
            await session.on_bus(inbound.message, inbound.env.src)

    async def watch_clients(self, interval_s: float = 0.25) -> None:
        """Forever: each session's backlog judged; a client stalled too long is cut off."""
        while True:
            await asyncio.sleep(interval_s)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if not session.check_backlog(now):
                    self.stalled.inc()
                    self.bus.spawn(session.end("client_stalled"))
                    self.close(session, "client_stalled")

    async def shutdown(self) -> None:
        for session in list(self.sessions.values()):
            await session.end("shutdown")
