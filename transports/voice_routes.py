"""Which VAD and which ASR instance hear each of a gateway's sessions.

Every session is given, when it opens, to the least loaded live VAD and the least loaded live
ASR (``session.serve`` to each one's inbox, :mod:`bus.served`), and keeps them: its microphone
audio reaches those two and no other instance. Least loaded: the larger of the instance's
published load and the share of its ``max_sessions`` this gateway has given it, so a burst of
sessions spreads before published loads catch up. An instance that leaves the registry (not
in a broker restart's resync, whose actors keep their sessions) has its sessions moved to
another at once (what it was hearing of them is lost: at most the speech in flight); with
none left, they wait for the next to register. A session that ends is dropped from both
(``session.drop``). An instance the broker purged and that came back (a network partition, a
freeze) drops all its sessions and raises ``served_generation`` in its capabilities; a gateway
that still had sessions on it (one that never saw the purge) gives them again
(``session.serve`` is idempotent).
"""

from __future__ import annotations

import logging

from bus.logs import kv
from bus.schema.session import DropSession, ServeSession
from bus.schema.system import Registration, RegistryChange
from transports.utterance_stream import BusPort

KINDS = ("vad", "asr")
log = logging.getLogger("duplex.voice_routes")


class VoiceRoutes:
    """See the module docstring."""

    def __init__(self, bus: BusPort) -> None:
        self.bus = bus
        self.routes: dict[str, dict[str, str]] = {}
        """Session → kind → the instance hearing it (absent: none yet)."""
        self._generation: dict[str, int] = {}
        """Instance → the ``served_generation`` it last published."""

    def serving(self, session: str, kind: str) -> str:
        """The instance of ``kind`` that hears ``session`` (empty: none)."""
        return self.routes.get(session, {}).get(kind, "")

    def open(self, session: str) -> None:
        self.routes[session] = {}
        for kind in KINDS:
            self._give(session, kind)

    def close(self, session: str) -> None:
        for actor_id in self.routes.pop(session, {}).values():
            self.bus.send_or_warn(actor_id, DropSession(), session)

    def on_registry(self, change: RegistryChange, reg: Registration, *, resync: bool) -> None:
        if reg.kind not in KINDS:
            return
        if change is RegistryChange.REMOVED:
            if resync:
                return
            self._generation.pop(reg.actor_id, None)
            for session, routes in self.routes.items():
                if routes.get(reg.kind) == reg.actor_id:
                    del routes[reg.kind]
                    # Best effort: one only frozen a while must not hear it twice when back.
                    self.bus.send_or_warn(reg.actor_id, DropSession(), session)
                    self._give(session, reg.kind)
            return
        generation = int(reg.capabilities.get("served_generation", 0))
        before = self._generation.get(reg.actor_id)
        self._generation[reg.actor_id] = generation
        if before is not None and generation > before:
            mine = [s for s, r in self.routes.items() if r.get(reg.kind) == reg.actor_id]
            if mine:
                log.info("sessions given again", extra=kv(by=reg.actor_id, sessions=len(mine)))
            for session in mine:
                self.bus.send_or_warn(reg.actor_id, ServeSession(), session)
        if change is RegistryChange.ADDED:
            for session, routes in self.routes.items():
                if reg.kind not in routes:
                    self._give(session, reg.kind)

    def refused(self, session: str, instance: str) -> str | None:
        """``instance`` answered ``session.drop`` to our ``session.serve``: it is full. The
        session goes to the least loaded other instance of that kind; returns the kind when
        none can take it (the client is told; the next instance to register takes it), None
        when it went elsewhere or ``instance`` was not serving it."""
        routes = self.routes.get(session, {})
        for kind, actor_id in list(routes.items()):
            if actor_id == instance:
                del routes[kind]
                if not self._give(session, kind, besides=instance):
                    return kind
        return None

    def _give(self, session: str, kind: str, besides: str = "") -> bool:
        """Give ``session`` to the least loaded live ``kind`` not full (nor ``besides``);
        False when there is none."""
        instance = self._least_loaded(kind, besides)
        if instance is None:
            return False  # none running: the next to register takes it
        if self.bus.send_or_warn(instance.actor_id, ServeSession(), session):
            self.routes[session][kind] = instance.actor_id
            log.debug("session served", extra=kv(session=session, kind=kind, by=instance.actor_id))
            return True
        return False

    def _least_loaded(self, kind: str, besides: str = "") -> Registration | None:
        live = [r for r in self.bus.registry.alive(kind) if r.actor_id != besides]
        if besides:  # after a refusal: only one with room (two full ones must not ping-pong)
            live = [r for r in live if r.load < 1.0]
        if not live:
            return None
        given: dict[str, int] = {}
        for routes in self.routes.values():
            if actor_id := routes.get(kind):
                given[actor_id] = given.get(actor_id, 0) + 1

        def load(reg: Registration) -> tuple[float, str]:
            return max(reg.load, given.get(reg.actor_id, 0) / _capacity(reg)), reg.actor_id

        return min(live, key=load)


def _capacity(reg: Registration) -> int:
    """Sessions ``reg`` serves at once (its ``max_sessions``; 200 if it does not say)."""
    return max(1, int(reg.capabilities.get("max_sessions", 200)))
