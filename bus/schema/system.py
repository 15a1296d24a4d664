"""Registry and system messages: READY / HEARTBEAT / DISCONNECT, discovery, describe, ping, errors.

Actors speak these to the broker (a ROUTER) over a DEALER; any actor answers ``describe`` and
``ping`` on its inbox. Registry changes are published on the event bus under
:data:`REGISTRY_TOPIC` so watchers can follow them (clone pattern: snapshot + versioned events).
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar

from bus.schema._base import Message, bounded, message

REGISTRY_TOPIC = b"sys.registry"
"""Event-bus topic of :class:`RegistryEvent`."""


@message
class Registration(Message):
    """What an actor is, as the broker records it. Sent inside READY and in discovery answers."""

    TYPE: ClassVar[str] = "registration"

    actor_id: str = bounded(128)
    """Unique id, e.g. ``tts_worker-gpu1-4242-1a2b``."""
    kind: str = bounded(64)
    """Actor kind: ``broker``, ``gateway``, ``tts_worker``..."""
    host: str = bounded(256)
    """Host name or address the actor runs on."""
    pid: int
    """Process id on that host."""
    endpoints: dict[str, str] = bounded(16, default={})
    """Named ZeroMQ endpoints the actor binds, e.g. ``{"inbox": "tcp://10.0.0.2:41234"}``."""
    capabilities: dict[str, Any] = bounded(64, default={})
    """Free-form facts peers match on (languages, voices, streaming...)."""
    resident_models: tuple[str, ...] = bounded(256, default=())
    """Model ids loaded and ready without a load delay."""
    load: float = 0.0
    """Current load, 0.0 idle .. 1.0 saturated."""
    public_key: str = bounded(64, default="")
    """Z85 CURVE public key of the actor's inbox, empty when CURVE is off."""
    started_wall_ns: int = 0
    """Wall clock when the actor started, nanoseconds since the epoch."""


@message
class Ready(Message):
    """Actor → broker: register (or re-register) with this description."""

    TYPE: ClassVar[str] = "ready"

    registration: Registration


@message
class Registered(Message):
    """Broker → actor: the registration was accepted; heartbeat at this rate."""

    TYPE: ClassVar[str] = "registered"

    heartbeat_ms: int
    """Heartbeat interval, milliseconds."""
    liveness: int
    """Missed heartbeats before a peer is considered gone."""
    broker_epoch: str = bounded(64)
    """Id of this broker run; changes when the broker restarts."""
    events_in: str = bounded(256)
    """XSUB endpoint to publish to (a wildcard host means: the broker's host)."""
    events_out: str = bounded(256)
    """XPUB endpoint to subscribe to (a wildcard host means: the broker's host)."""


@message
class Update(Message):
    """Actor → broker: change parts of a live registration (``None`` = unchanged)."""

    TYPE: ClassVar[str] = "update"

    load: float | None = None
    """New load, 0.0 .. 1.0."""
    resident_models: tuple[str, ...] | None = bounded(256, default=None)
    """New list of resident models."""
    capabilities: dict[str, Any] | None = bounded(64, default=None)
    """New capabilities map (replaces the old one)."""


@message
class Heartbeat(Message):
    """Both ways between broker and actor, every ``heartbeat_ms``."""

    TYPE: ClassVar[str] = "heartbeat"

    registry_version: int = 0
    """Broker → actor: the registry's version, so a mirror that missed an event resyncs."""


@message
class Disconnect(Message):
    """Actor → broker: leaving now. Broker → actor: you are not registered, send READY again."""

    TYPE: ClassVar[str] = "disconnect"

    reason: str = bounded(256, default="")


@message
class Discover(Message):
    """Request: the live registrations, optionally only one kind."""

    TYPE: ClassVar[str] = "discover"

    kind: str = bounded(64, default="")
    """Only actors of this kind; empty for all."""


@message
class RegistrySnapshot(Message):
    """Reply to :class:`Discover`: the live registrations at ``version``."""

    TYPE: ClassVar[str] = "registry.snapshot"

    broker_epoch: str = bounded(64)
    version: int
    """Registry version; events with a higher version came after this snapshot."""
    actors: tuple[Registration, ...] = bounded(4096, default=())


class RegistryChange(enum.StrEnum):
    """What happened to a registration."""

    ADDED = "added"
    UPDATED = "updated"
    REMOVED = "removed"


@message
class RegistryEvent(Message):
    """Published on :data:`REGISTRY_TOPIC` whenever the registry changes."""

    TYPE: ClassVar[str] = "registry.event"

    broker_epoch: str = bounded(64)
    version: int
    """Registry version after this change."""
    change: RegistryChange
    registration: Registration
    reason: str = bounded(256, default="")
    """Why a registration was removed: ``disconnect``, ``expired``..."""


@message
class Describe(Message):
    """Request: describe yourself."""

    TYPE: ClassVar[str] = "describe"


@message
class Description(Message):
    """Reply to :class:`Describe`."""

    TYPE: ClassVar[str] = "description"

    registration: Registration
    stats: dict[str, Any] = bounded(64, default={})
    """Counters worth a glance: messages in/out, invalid messages, uptime..."""


@message
class Ping(Message):
    """Request: are you there?"""

    TYPE: ClassVar[str] = "ping"


@message
class Pong(Message):
    """Reply to :class:`Ping`."""

    TYPE: ClassVar[str] = "pong"


@message
class Error(Message):
    """Reply to a request that could not be served."""

    TYPE: ClassVar[str] = "error"

    code: str = bounded(64)
    """Machine-readable code: ``INVALID_MESSAGE``, ``UNSUPPORTED_TYPE``, ``NOT_REGISTERED``..."""
    message: str = bounded(1024, default="")
    """Human-readable detail."""
