"""Routing messages: which TTS worker should speak for a session."""

from __future__ import annotations

from typing import Annotated, ClassVar

from bus.schema._base import Message, bounded, message


@message
class RouteRequest(Message, frozen=True, kw_only=True):
    """Request to the router: a TTS worker for the envelope's session."""

    TYPE: ClassVar[str] = "route.request"

    voice: Annotated[str, bounded(128)] = ""
    """Voice id the worker must have; empty for any."""


@message
class RouteAssignment(Message, frozen=True, kw_only=True):
    """Reply to :class:`RouteRequest`."""

    TYPE: ClassVar[str] = "route.assignment"

    worker_id: Annotated[str, bounded(128)]
    voice: Annotated[str, bounded(128)] = ""
    """The voice to ask for (the request's, or the worker's default)."""


@message
class RouteRelease(Message, frozen=True, kw_only=True):
    """The session is over: forget its worker affinity."""

    TYPE: ClassVar[str] = "route.release"
