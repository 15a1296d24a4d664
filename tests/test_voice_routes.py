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


def test_a_full_instance_refusing_a_session_has_it_given_to_one_with_room_or_reported() -> None:
    bus = Bus()
    routes = VoiceRoutes(bus)
    change(routes, bus, RegistryChange.ADDED, reg("vad-a", "vad"))
    change(routes, bus, RegistryChange.ADDED, reg("asr-a", "asr", load=0.0))
    change(routes, bus, RegistryChange.ADDED, reg("asr-b", "asr", load=1.0))  # full
    routes.open("s1")
    assert routes.serving("s1", "asr") == "asr-a"
    # asr-a turns out full too (its load had not caught up): the only other is full as well,
    # so nobody takes it, and the caller is told which kind is missing.
    change(routes, bus, RegistryChange.UPDATED, reg("asr-a", "asr", load=1.0))
    bus.sent.clear()
    assert routes.refused("s1", "asr-a") == "asr"
    assert routes.serving("s1", "asr") == "" and bus.sent == []
    # A refusal from one that is not serving the session changes nothing.
    assert routes.refused("s1", "asr-b") is None
    # With room somewhere, a refusal moves the session there.
    change(routes, bus, RegistryChange.ADDED, reg("asr-c", "asr", load=0.5))
    assert routes.serving("s1", "asr") == "asr-c"  # (a new instance takes sessions lacking one)
    change(routes, bus, RegistryChange.UPDATED, reg("asr-a", "asr", load=0.2))
    bus.sent.clear()
    assert routes.refused("s1", "asr-c") is None
    assert routes.serving("s1", "asr") == "asr-a"
    assert bus.sent == [("asr-a", ServeSession.TYPE, "s1")]


class Instance:
    """What ServedSessions needs of its actor (a VAD or an ASR), recording what it does."""

    def __init__(self) -> None:
        import logging

        from bus.registry import RegistryMirror

        self.capabilities: dict[str, Any] = {}
        self.registry = RegistryMirror()
        self.log = logging.getLogger("test.instance")
        self.topics: set[bytes] = set()
        self.sent: list[tuple[str, str, str]] = []
        self.load = 0.0

    def subscribe(self, topic: bytes) -> None:
        self.topics.add(topic)

    def unsubscribe(self, topic: bytes) -> None:
        self.topics.discard(topic)

    async def update_registration(self, *, load: float | None = None, **_: Any) -> None:
        self.load = self.load if load is None else load

    def send_or_warn(self, peer_id: str, msg: Message, session: str = "") -> bool:
        self.sent.append((peer_id, msg.TYPE, session))
        return True


def test_a_full_instance_tells_the_gateway_it_refused_and_hears_nothing_of_it() -> None:
    import asyncio

    from bus.envelope import Envelope
    from bus.inbound import Inbound, Via
    from bus.served import ServedSessions

    actor = Instance()
    served = ServedSessions(actor, (b"audio.in.",), max_sessions=1)  # type: ignore[arg-type]

    def serve(session: str) -> Inbound:
        env = Envelope(type=ServeSession.TYPE, body={}, session=session, src="gateway-1")
        return Inbound(env=env, message=ServeSession(), via=Via.INBOX)

    async def run() -> None:
        assert await served.handle(serve("a" * 16))
        assert await served.handle(serve("b" * 16))

    asyncio.run(run())
    assert set(served.sessions) == {"a" * 16} and actor.load == 1.0
    assert actor.topics == {b"audio.in." + b"a" * 16}
    assert actor.sent == [("gateway-1", DropSession.TYPE, "b" * 16)]
