"""A gateway's client sessions: opened by transports, fed by the bus.

Every transport (WebSocket now, WebRTC next) opens a :class:`~transports.session.ClientSession`
here with its own :class:`~transports.session.ClientLink` and closes it when the client goes;
the gateway actor hands every bus message to :meth:`SessionHub.on_message`, which gives worker
frames to their utterance streams and everything else to the session it names.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter

from bus.envelope import new_id
from bus.inbound import Inbound
from transports.session import ClientLink, ClientSession, SessionBus, SessionMetrics
from transports.utterance_stream import StreamClient


class SessionHub:
    """The sessions of one gateway and the utterance streams they (and HTTP) share."""

    def __init__(
        self, bus: SessionBus, registry: Any, *, max_text_chars: int, busy_wait_s: float
    ) -> None:
        self.bus = bus
        self.max_text_chars = max_text_chars
        self.sessions: dict[str, ClientSession] = {}
        self.metrics = SessionMetrics(registry)
        busy_waits = Counter(
            "duplex_route_busy_waits_total",
            "Times a route found every fitting TTS worker saturated and asked again",
            registry=registry,
        )
        self.streams = StreamClient(bus, busy_wait_s=busy_wait_s, on_busy_wait=busy_waits.inc)

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
        )
        self.sessions[session.session_id] = session
        await session.start()
        return session

    def close(self, session: ClientSession, reason: str = "client_closed") -> None:
        """The client's connection is gone."""
        if self.sessions.pop(session.session_id, None) is not None:
            session.close(reason)

    async def on_message(self, inbound: Inbound) -> None:
        if await self.streams.on_message(inbound):
            return
        session = self.sessions.get(inbound.env.session)
        if session is not None:  # else the session is gone: late messages are dropped
            await session.on_bus(inbound.message, inbound.env.src)

    async def shutdown(self) -> None:
        for session in list(self.sessions.values()):
            await session.end("shutdown")
