"""Who is alive: the broker's registry, and the mirror of it that every actor keeps.

The broker's :class:`Registry` is plain data: it records registrations, expires the silent ones
and numbers every change. The :class:`RegistryMirror` follows it from afar with the clone
pattern: a snapshot at version V, then every published event with a version above V.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from bus.schema.system import (
    Registration,
    RegistryChange,
    RegistryEvent,
    RegistrySnapshot,
    Update,
)


@dataclass(slots=True)
class Entry:
    """One live registration and the last time its actor was heard from."""

    registration: Registration
    identity: bytes
    """ROUTER routing id of the actor's broker socket."""
    last_seen: float
    """``time.monotonic()`` of the last message from the actor."""


class Registry:
    """The broker's table of live actors; every change bumps ``version`` and returns an event."""

    def __init__(self, epoch: str, expiry_s: float) -> None:
        self.epoch = epoch
        self.expiry_s = expiry_s
        self.version = 0
        self._entries: dict[str, Entry] = {}
        self._by_identity: dict[bytes, str] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def actor_for(self, identity: bytes) -> str | None:
        """Actor id registered from this routing id, if any."""
        return self._by_identity.get(identity)

    def entries(self) -> list[Entry]:
        """Live entries, oldest registration first."""
        return list(self._entries.values())

    def _event(self, change: RegistryChange, reg: Registration, reason: str = "") -> RegistryEvent:
        self.version += 1
        return RegistryEvent(
            broker_epoch=self.epoch,
            version=self.version,
            change=change,
            registration=reg,
            reason=reason,
        )

    def register(self, reg: Registration, identity: bytes, now: float) -> RegistryEvent:
        """Add or replace ``reg`` (an actor re-sending READY, perhaps from a new socket)."""
        old = self._entries.get(reg.actor_id)
        if old is not None:
            self._by_identity.pop(old.identity, None)
        self._entries[reg.actor_id] = Entry(reg, identity, now)
        self._by_identity[identity] = reg.actor_id
        return self._event(RegistryChange.UPDATED if old else RegistryChange.ADDED, reg)

    def touch(self, identity: bytes, now: float) -> bool:
        """Note a sign of life; False if the routing id is not registered."""
        actor_id = self._by_identity.get(identity)
        if actor_id is None:
            return False
        self._entries[actor_id].last_seen = now
        return True

    def forgive(self, seconds: float, now: float) -> None:
        """Do not count the ``seconds`` before ``now`` as anyone's silence (the broker could
        not listen then)."""
        for entry in self._entries.values():
            entry.last_seen = min(now, entry.last_seen + seconds)

    def update(self, identity: bytes, change: Update, now: float) -> RegistryEvent | None:
        """Apply a partial update; None if the routing id is not registered."""
        actor_id = self._by_identity.get(identity)
        if actor_id is None:
            return None
        entry = self._entries[actor_id]
        fields = {
            name: value
            for name in ("load", "resident_models", "capabilities")
            if (value := getattr(change, name)) is not None
        }
        entry.registration = msgspec.structs.replace(entry.registration, **fields)
        entry.last_seen = now
        return self._event(RegistryChange.UPDATED, entry.registration)

    def remove(self, identity: bytes, reason: str) -> RegistryEvent | None:
        """Remove the actor behind ``identity``; None if it was not registered."""
        actor_id = self._by_identity.pop(identity, None)
        if actor_id is None:
            return None
        entry = self._entries.pop(actor_id)
        return self._event(RegistryChange.REMOVED, entry.registration, reason)

    def remove_actor(self, actor_id: str, pid: int, reason: str) -> RegistryEvent | None:
        """Remove ``actor_id`` if its process is ``pid`` (a dead process's successor may hold the
        same id); None if no such registration is live."""
        entry = self._entries.get(actor_id)
        if entry is None or entry.registration.pid != pid:
            return None
        return self.remove(entry.identity, reason)

    def remove_predecessor(self, reg: Registration) -> RegistryEvent | None:
        """Remove the live registration ``reg.replaces`` names (reason ``replaced``), unless it
        is ``reg``'s own process sending READY again; None if there is none."""
        entry = self._entries.get(reg.replaces) if reg.replaces else None
        if entry is None:
            return None
        old = entry.registration
        if (old.host, old.pid) == (reg.host, reg.pid):
            return None
        return self.remove(entry.identity, "replaced")

    def expire(self, now: float) -> list[RegistryEvent]:
        """Remove every actor silent for longer than ``expiry_s``."""
        stale = [e.identity for e in self._entries.values() if now - e.last_seen > self.expiry_s]
        return [ev for ident in stale if (ev := self.remove(ident, "expired")) is not None]

    def snapshot(self, kind: str = "") -> RegistrySnapshot:
        """The live registrations (of ``kind``, or all) at the current version."""
        regs = tuple(
            e.registration
            for e in self._entries.values()
            if not kind or e.registration.kind == kind
        )
        return RegistrySnapshot(broker_epoch=self.epoch, version=self.version, actors=regs)


Listener = Callable[[RegistryChange, Registration], None]


class RegistryMirror:
    """An actor's view of the registry, kept current from a snapshot plus versioned events.

    Events that arrive before the snapshot are held and replayed; events from another broker
    epoch (a restarted broker) mark the mirror stale until the next snapshot.
    """

    def __init__(self) -> None:
        self.epoch = ""
        self.version = -1
        self.synced_at = 0.0
        self._actors: dict[str, Registration] = {}
        self._early: list[RegistryEvent] = []
        self._listeners: list[Listener] = []
        self.in_snapshot = False
        """True while listeners hear the changes a snapshot brought (a broker restart, a
        resync), not a published event: an actor missing from it may only not have registered
        with a new broker yet."""

    @property
    def synced(self) -> bool:
        """True once a snapshot of the current broker epoch has been applied."""
        return self.version >= 0

    def listen(self, listener: Listener) -> None:
        """Call ``listener(change, registration)`` on every applied change."""
        self._listeners.append(listener)

    def get(self, actor_id: str) -> Registration | None:
        """The registration of ``actor_id``, if alive."""
        return self._actors.get(actor_id)

    def alive(self, kind: str = "") -> list[Registration]:
        """Live registrations of ``kind`` (all kinds when empty)."""
        return [r for r in self._actors.values() if not kind or r.kind == kind]

    def apply_snapshot(self, snap: RegistrySnapshot) -> None:
        """Replace the view with ``snap`` and replay newer held events; listeners see the diff."""
        old = self._actors
        self._actors = {r.actor_id: r for r in snap.actors}
        self.epoch, self.version = snap.broker_epoch, snap.version
        self.synced_at = time.monotonic()
        self.in_snapshot = True
        try:
            for actor_id, reg in old.items():
                if actor_id not in self._actors:
                    self._notify(RegistryChange.REMOVED, reg)
            for actor_id, reg in self._actors.items():
                if old.get(actor_id) != reg:
                    change = RegistryChange.ADDED if actor_id not in old else RegistryChange.UPDATED
                    self._notify(change, reg)
        finally:
            self.in_snapshot = False
        early, self._early = self._early, []
        for event in early:
            self.apply_event(event)

    def apply_event(self, event: RegistryEvent) -> bool:
        """Apply a published event; False when a fresh snapshot is needed (unknown epoch or gap)."""
        if not self.synced:
            self._early.append(event)
            del self._early[:-1000]
            return True
        if event.broker_epoch != self.epoch:
            self.version = -1
            self._early = [event]
            return False
        if event.version <= self.version:
            return True
        gap = event.version != self.version + 1
        self.version = event.version
        reg = event.registration
        if event.change is RegistryChange.REMOVED:
            if self._actors.pop(reg.actor_id, None) is not None:
                self._notify(event.change, reg)
        else:
            self._actors[reg.actor_id] = reg
            self._notify(event.change, reg)
        return not gap

    def _notify(self, change: RegistryChange, reg: Registration) -> None:
        for listener in self._listeners:
            listener(change, reg)
