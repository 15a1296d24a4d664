"""The sessions one VAD or ASR instance serves: each given to it by the session's gateway
(``session.serve`` / ``session.drop`` to its inbox), heard on its own topics only.

An instance subscribes to a session's topics (``audio.in.<session>``, and ``vad.<session>`` /
``session.state.<session>`` as the kind needs) when it is given the session and unsubscribes
when it is taken away, so the broker's proxy sends it no other session's audio: capacity grows
with the instances. Its registration's ``load`` is sessions served over ``max_sessions``, which
the gateway reads to give the next session to the least loaded instance. Session ids are fixed
length (16 hex characters), so one is never a prefix of another's topic. A gateway that leaves
the registry (not in a broker restart's resync) takes its sessions with it, and an instance
the broker purged drops every session (:meth:`ServedSessions.drop_all`).
"""

from __future__ import annotations

from collections.abc import Callable

from bus import topics
from bus.inbound import Inbound
from bus.logs import kv
from bus.runtime import Actor
from bus.schema.session import DropSession, ServeSession
from bus.schema.system import Registration, RegistryChange


class ServedSessions:
    """See the module docstring."""

    def __init__(
        self,
        actor: Actor,
        prefixes: tuple[bytes, ...],
        max_sessions: int,
        on_drop: Callable[[str], None] = lambda session: None,
    ) -> None:
        self.actor = actor
        self.on_drop = on_drop
        """Called with a session dropped (the actor forgets what it kept of it)."""
        self.prefixes = prefixes
        self.max_sessions = max_sessions
        self.sessions: dict[str, str] = {}
        """Session → the gateway that gave it."""
        self.generation = 0
        """How many times every session was dropped at once (:meth:`drop_all`)."""
        actor.capabilities = {
            **actor.capabilities,
            "max_sessions": max_sessions,
            "served_generation": 0,
        }
        actor.registry.listen(self._on_registry)

    async def handle(self, inbound: Inbound) -> bool:
        """``session.serve`` or ``session.drop`` applied (True), or another message (False)."""
        msg, session = inbound.message, inbound.env.session
        if isinstance(msg, ServeSession):
            if not await self.serve(session, inbound.env.src):
                # Told back, so the gateway gives it to another instance (or tells the client).
                self.actor.log.warning("session refused: full", extra=kv(session=session))
                if session:
                    self.actor.send_or_warn(inbound.env.src, DropSession(), session)
            return True
        if isinstance(msg, DropSession):
            await self.drop(session)
            return True
        return False

    def __contains__(self, session: str) -> bool:
        return session in self.sessions

    async def serve(self, session: str, gateway: str) -> bool:
        """Hear ``session`` (of ``gateway``) from now on; False (and not served) when full or
        unnamed."""
        if not session or (session not in self.sessions and self.full):
            return False
        if session not in self.sessions:
            for prefix in self.prefixes:
                self.actor.subscribe(topics.topic(prefix, session))
            self.sessions[session] = gateway
            await self._publish_load()
        return True

    async def drop(self, session: str) -> bool:
        """Stop hearing ``session``; False if it was not served."""
        if not self._forget(session):
            return False
        await self._publish_load()
        return True

    def _forget(self, session: str) -> bool:
        if session not in self.sessions:
            return False
        del self.sessions[session]
        for prefix in self.prefixes:
            self.actor.unsubscribe(topics.topic(prefix, session))
        self.on_drop(session)
        return True

    async def drop_all(self) -> None:
        """Stop hearing every session: the broker purged this instance (``Actor.on_purged``),
        so each gateway gave its sessions to another. ``served_generation`` in the
        registration's capabilities goes up, so a gateway that still counts on this instance
        (one that never saw it purged) gives its sessions again (``transports/voice_routes.py``).
        """
        dropped = len(self.sessions)
        for session in list(self.sessions):
            self._forget(session)
        self.generation += 1
        self.actor.log.warning("purged: sessions dropped", extra=kv(sessions=dropped))
        await self.actor.update_registration(
            load=0.0,
            capabilities={**self.actor.capabilities, "served_generation": self.generation},
        )

    def _on_registry(self, change: RegistryChange, reg: Registration) -> None:
        if change is RegistryChange.REMOVED and not self.actor.registry.in_snapshot:
            for session, gateway in list(self.sessions.items()):
                if gateway == reg.actor_id:
                    self.actor.spawn(self.drop(session))

    @property
    def full(self) -> bool:
        return len(self.sessions) >= self.max_sessions

    async def _publish_load(self) -> None:
        await self.actor.update_registration(load=min(1.0, len(self.sessions) / self.max_sessions))
