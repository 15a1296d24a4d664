"""The gateway's VAD/ASR placement (``transports/voice_routes.py``) against a registry it is told
about: least loaded first, moved when an instance leaves, and given again when an instance that
the broker purged comes back having dropped them (its ``served_generation`` went up) without
this gateway having seen it leave. No processes: the bus is a recorder (the same rules run in
``tests/test_voice_shards.py`` and ``tests/test_multihost.py`` with real ones)."""

from __future__ import annotations

from typing import Any

from bus.schema import Message
from bus.schema.session import DropSession, ServeSession
from bus.schema.system import Registration, RegistryChange
from transports.voice_routes import VoiceRoutes


class Registry:
    def __init__(self) -> None:
        self.regs: dict[str, Registration] = {}

    def alive(self, kind: str = "") -> list[Registration]:
        return [r for r in self.regs.values() if not kind or r.kind == kind]

    def get(self, actor_id: str) -> Registration | None:
        return self.regs.get(actor_id)


class Bus:
    id = "gateway-1"

    def __init__(self) -> None:
        self._registry = Registry()
        self.sent: list[tuple[str, str, str]] = []

    @property
    def registry(self) -> Any:
        return self._registry

    def send_or_warn(self, peer_id: str, msg: Message, session: str = "") -> bool:
        self.sent.append((peer_id, msg.TYPE, session))
        return True

    async def request(self, *args: Any, **kwargs: Any) -> Message:
        raise NotImplementedError

    def spawn(self, coro: Any) -> Any:
        raise NotImplementedError


def reg(actor_id: str, kind: str, load: float = 0.0, generation: int = 0) -> Registration:
    caps = {"max_sessions": 10, "served_generation": generation}
    return Registration(actor_id=actor_id, kind=kind, host="h", pid=1, capabilities=caps, load=load)


def change(routes: VoiceRoutes, bus: Bus, how: RegistryChange, r: Registration) -> None:
    if how is RegistryChange.REMOVED:
        bus.registry.regs.pop(r.actor_id, None)
    else:
        bus.registry.regs[r.actor_id] = r
    routes.on_registry(how, r, resync=False)


def test_sessions_spread_move_when_an_instance_leaves_and_return_after_a_purge_unseen() -> None:
    bus = Bus()
    routes = VoiceRoutes(bus)
    for r in (reg("asr-a", "asr"), reg("asr-b", "asr"), reg("vad-a", "vad")):
        change(routes, bus, RegistryChange.ADDED, r)
    for session in ("s1", "s2"):
        routes.open(session)
    # A burst spreads before any load is published: one session on each ASR.
    assert {routes.serving("s1", "asr"), routes.serving("s2", "asr")} == {"asr-a", "asr-b"}
    on_a = "s1" if routes.serving("s1", "asr") == "asr-a" else "s2"
    change(routes, bus, RegistryChange.UPDATED, reg("asr-a", "asr", load=0.1))
    bus.sent.clear()

    # asr-a was purged and came back with its sessions dropped, and this gateway never saw it
    # leave: the raised generation gets it its session back, once.
    change(routes, bus, RegistryChange.UPDATED, reg("asr-a", "asr", load=0.0, generation=1))
    assert bus.sent == [("asr-a", ServeSession.TYPE, on_a)]
    bus.sent.clear()
    change(routes, bus, RegistryChange.UPDATED, reg("asr-a", "asr", load=0.1, generation=1))
    assert bus.sent == []  # (its load coming back is no reason to serve again)

    # asr-a leaves: its session goes to asr-b (and asr-a is told to drop it, in case it is
    # only frozen); back with a new generation, it is given nothing it no longer has.
    change(routes, bus, RegistryChange.REMOVED, reg("asr-a", "asr"))
    assert (("asr-a", DropSession.TYPE, on_a) in bus.sent) and routes.serving(on_a, "asr") == (
        "asr-b"
    )
    bus.sent.clear()
    change(routes, bus, RegistryChange.ADDED, reg("asr-a", "asr", generation=2))
    assert bus.sent == []
    # A broker restart's resync removes nobody's sessions.
    routes.on_registry(RegistryChange.REMOVED, reg("asr-b", "asr"), resync=True)
    assert routes.serving(on_a, "asr") == "asr-b" and bus.sent == []
