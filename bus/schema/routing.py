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


@message
class RouteAssignment(Message):
    """Reply to :class:`RouteRequest`."""

    TYPE: ClassVar[str] = "route.assignment"

    worker_id: str = bounded(128)
    voice: str = bounded(128, default="")
    """The voice to ask for (the request's, or the worker's default)."""


@message
class RouteRelease(Message):
    """The session is over: forget its worker affinity."""

    TYPE: ClassVar[str] = "route.release"
