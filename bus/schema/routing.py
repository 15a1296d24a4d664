"""Routing messages: which TTS worker should speak for a session."""

from __future__ import annotations

from typing import ClassVar

from bus.schema._base import Message, bounded, message


@message
class RouteRequest(Message):
    """Request to the router: a TTS worker for the envelope's session."""

    TYPE: ClassVar[str] = "route.request"

    voice: str = bounded(128, default="")
    """Voice id the worker must have; empty for any."""
    language: str = bounded(16, default="")
    """Language the worker must speak when no voice is named (e.g. ``en_US``)."""
    exclude: tuple[str, ...] = bounded(64, default=())
    """Worker ids not to pick (they just failed this session)."""


@message
class RouteAssignment(Message):
    """Reply to :class:`RouteRequest`."""

    TYPE: ClassVar[str] = "route.assignment"

    worker_id: str = bounded(128)
    inbox: str = bounded(256)
    """The worker's inbox endpoint."""
    voice: str = bounded(128, default="")
    """The voice to ask for (the request's, or the worker's default)."""
    resident: bool = False
    """True if the voice is loaded on that worker (no load delay)."""
    reason: str = bounded(64, default="")
    """Why this worker: ``affinity``, ``least_loaded``, ``round_robin``, ``least_latency``."""


@message
class RouteRelease(Message):
    """The session is over: forget its worker affinity."""

    TYPE: ClassVar[str] = "route.release"
