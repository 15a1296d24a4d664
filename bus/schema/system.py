"""Registry and system messages: READY / HEARTBEAT / DISCONNECT, discovery, describe, ping, errors.

Actors speak these to the broker (a ROUTER) over a DEALER; any actor answers ``describe`` and
``ping`` on its inbox; ``duplex run``'s watcher sends ``gone`` when the actor process it runs
dies. Registry changes are published on the event bus under :data:`REGISTRY_TOPIC` so others
can follow them (clone pattern: snapshot + versioned events).
"""

from __future__ import annotations

import enum
from typing import Annotated, ClassVar

import msgspec

from bus.schema._base import Finite, FreeForm, Key, Message, Text, bounded, message

REGISTRY_TOPIC = b"sys.registry"
"""Event-bus topic of :class:`RegistryEvent`."""


@message
class Registration(Message, frozen=True, kw_only=True):
    """What an actor is, as the broker records it. Sent inside READY and in discovery answers."""

    TYPE: ClassVar[str] = "registration"

    actor_id: Annotated[str, bounded(128)]
    """Unique id, e.g. ``tts_worker-gpu1-4242-1a2b``."""
    kind: Annotated[str, bounded(64)]
    """Actor kind: ``broker``, ``gateway``, ``tts_worker``..."""
    host: Annotated[str, bounded(256)]
    """Host name or address the actor runs on."""
    pid: int
    """Process id on that host."""
    endpoints: Annotated[dict[Key, Text], bounded(16)] = msgspec.field(default_factory=dict)
    """Named ZeroMQ endpoints the actor binds, e.g. ``{"inbox": "tcp://10.0.0.2:41234"}``."""
    capabilities: Annotated[FreeForm, bounded(64)] = msgspec.field(default_factory=dict)
    """Free-form facts peers match on (languages, voices, streaming...)."""
    resident_models: Annotated[tuple[Text, ...], bounded(256)] = ()
    """Model ids loaded and ready without a load delay."""
    load: Finite = 0.0
    """Current load, 0.0 idle .. 1.0 saturated."""
    public_key: Annotated[str, bounded(64)] = ""
    """Z85 CURVE public key of the actor's inbox, empty when CURVE is off."""
    started_wall_ns: int = 0
    """Wall clock when the actor started, nanoseconds since the epoch."""
    restarts: int | msgspec.UnsetType = msgspec.UNSET
    """How many times ``duplex run``'s watcher has restarted this actor after a crash, this
    process being the latest. Absent from the wire when never (read it as ``reg.restarts or 0``):
    the READY of an actor that never crashed is the same bytes as before the field existed, and
    an older broker still accepts it."""
    replaces: Annotated[str, bounded(128)] | msgspec.UnsetType = msgspec.UNSET
    """Id of the crashed process this one restarts; the broker drops that registration at once
    (reason ``replaced``). Absent when there is none."""


@message
class Ready(Message, frozen=True, kw_only=True):
    """Actor → broker: register (or re-register) with this description."""

    TYPE: ClassVar[str] = "ready"

    registration: Registration


@message
class Registered(Message, frozen=True, kw_only=True):
    """Broker → actor: the registration was accepted; heartbeat at this rate."""

    TYPE: ClassVar[str] = "registered"

    heartbeat_ms: int
    """Heartbeat interval, milliseconds."""
    liveness: int
    """Missed heartbeats before a peer is considered gone."""
    broker_epoch: Annotated[str, bounded(64)]
    """Id of this broker run; changes when the broker restarts."""
    events_in: Annotated[str, bounded(256)]
    """XSUB endpoint to publish to (a wildcard host means: the broker's host)."""
    events_out: Annotated[str, bounded(256)]
    """XPUB endpoint to subscribe to (a wildcard host means: the broker's host)."""


@message
class Update(Message, frozen=True, kw_only=True):
    """Actor → broker: change parts of a live registration (``None`` = unchanged)."""

    TYPE: ClassVar[str] = "update"

    load: Finite | None = None
    """New load, 0.0 .. 1.0."""
    resident_models: Annotated[tuple[Text, ...], bounded(256)] | None = None
    """New list of resident models."""
    capabilities: Annotated[FreeForm, bounded(64)] | None = None
    """New capabilities map (replaces the old one)."""


@message
class Heartbeat(Message, frozen=True, kw_only=True):
    """Both ways between broker and actor, every ``heartbeat_ms``."""

    TYPE: ClassVar[str] = "heartbeat"

    registry_version: int = 0
    """Broker → actor: the registry's version, so a mirror that missed an event resyncs."""


@message
class Disconnect(Message, frozen=True, kw_only=True):
    """Actor → broker: leaving now. Broker → actor: you are not registered, send READY again."""

    TYPE: ClassVar[str] = "disconnect"

    reason: Annotated[str, bounded(256)] = ""


@message
class Gone(Message, frozen=True, kw_only=True):
    """Watcher → broker: the process behind ``actor_id`` died; drop its registration now instead
    of after ``heartbeat_ms * liveness``. Answered with the ``registry.event`` of the removal
    (reason ``exited``), or ``error`` ``NOT_REGISTERED`` when no live registration of that id
    has that pid (it never registered, already left, or a successor took the id)."""

    TYPE: ClassVar[str] = "gone"

    actor_id: Annotated[str, bounded(128)]
    pid: int
    """Process id the registration must have."""
    reason: Annotated[str, bounded(256)] = ""
    """How it died, e.g. ``signal SIGKILL`` or ``exit 1`` (logged by the broker)."""


@message
class Discover(Message, frozen=True, kw_only=True):
    """Request: the live registrations, optionally only one kind."""

    TYPE: ClassVar[str] = "discover"

    kind: Annotated[str, bounded(64)] = ""
    """Only actors of this kind; empty for all."""


@message
class RegistrySnapshot(Message, frozen=True, kw_only=True):
    """Reply to :class:`Discover`: the live registrations at ``version``."""

    TYPE: ClassVar[str] = "registry.snapshot"

    broker_epoch: Annotated[str, bounded(64)]
    version: int
    """Registry version; events with a higher version came after this snapshot."""
    actors: Annotated[tuple[Registration, ...], bounded(4096)] = ()


class RegistryChange(enum.StrEnum):
    """What happened to a registration."""

    ADDED = "added"
    UPDATED = "updated"
    REMOVED = "removed"


@message
class RegistryEvent(Message, frozen=True, kw_only=True):
    """Published on :data:`REGISTRY_TOPIC` whenever the registry changes."""

    TYPE: ClassVar[str] = "registry.event"

    broker_epoch: Annotated[str, bounded(64)]
    version: int
    """Registry version after this change."""
    change: RegistryChange
    registration: Registration
    reason: Annotated[str, bounded(256)] = ""
    """Why a registration was removed: ``disconnect``, ``expired``..."""


@message
class Describe(Message, frozen=True, kw_only=True):
    """Request: describe yourself."""

    TYPE: ClassVar[str] = "describe"


@message
class Description(Message, frozen=True, kw_only=True):
    """Reply to :class:`Describe`."""

    TYPE: ClassVar[str] = "description"

    registration: Registration
    stats: Annotated[FreeForm, bounded(64)] = msgspec.field(default_factory=dict)
    """Counters worth a glance: messages in/out, invalid messages, uptime..."""


@message
class Ping(Message, frozen=True, kw_only=True):
    """Request: are you there?"""

    TYPE: ClassVar[str] = "ping"


@message
class Pong(Message, frozen=True, kw_only=True):
    """Reply to :class:`Ping`."""

    TYPE: ClassVar[str] = "pong"


@message
class Error(Message, frozen=True, kw_only=True):
    """Reply to a request that could not be served."""

    TYPE: ClassVar[str] = "error"

    code: Annotated[str, bounded(64)]
    """Machine-readable code: ``INVALID_MESSAGE``, ``UNSUPPORTED_TYPE``, ``NOT_REGISTERED``..."""
    message: Annotated[str, bounded(1024)] = ""
    """Human-readable detail."""
