"""The router actor: picks the TTS worker that speaks for a session.

Consumes on its inbox: ``route.request`` (answered with ``route.assignment``, or ``error``
``BUSY`` when every worker that could take it is saturated, the asker may wait and ask again,
or ``NO_WORKER`` saying why none fits) and ``route.release`` (the session ended).
Emits nothing else; it follows the broker's registry (every actor keeps a mirror) and pings
each live TTS worker every second for latency and liveness.

How a worker is chosen, in order:
1. it is a live ``tts_worker`` that has the voice (any, if none is named), is not saturated
   (load below 1) and is not stale (answered a recent ping);
2. the session's previous worker, if it still qualifies (affinity);
3. among the rest, those on ``prefer_device`` (``cpu`` or ``cuda``, when set) if any, and of
   those the ones with the voice already loaded come first;
4. then the strategy: ``least_loaded`` (default), ``round_robin`` or ``least_latency``.
A worker that leaves the registry loses its sessions' affinity at once, so the next request
re-routes. Settings: :class:`RouterSettings` (``actors.router`` in topology.yaml).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Literal

from bus.errors import BusError
from bus.inbound import Inbound
from bus.runtime import Actor
from bus.schema.routing import RouteAssignment, RouteRelease, RouteRequest
from bus.schema.system import Error, Ping, Registration, RegistryChange
from bus.settings import load_settings
from bus.topology import ActorConfig

Strategy = Literal["least_loaded", "round_robin", "least_latency"]
"""How the router picks among the workers that qualify."""
WORKER_KIND = "tts_worker"


@dataclass(frozen=True, slots=True)
class RouterSettings:
    """``actors.router`` in topology.yaml."""

    strategy: Strategy = "least_loaded"
    """How a worker is picked among those that qualify (see the module docstring)."""
    ping_interval_s: float = 1.0
    """Seconds between pings of each TTS worker (its liveness and latency); a ping waits half
    of this for its answer, 0.1 s at least."""
    prefer_device: Literal["", "cpu", "cuda"] = ""
    """Workers on this device class first (the ``device`` of their registration); empty: no
    preference. A preferred worker that is saturated or lacks the voice is passed over."""

    def __post_init__(self) -> None:
        if self.ping_interval_s <= 0:
            raise ValueError(f"ping_interval_s {self.ping_interval_s} must be above 0")


@dataclass(slots=True)
class Health:
    """What the router has seen of one worker."""

    latency_s: float | None = None
    """Smoothed ping round trip."""
    failures: int = 0
    """Pings in a row that got no answer."""


@dataclass(slots=True)
class Choice:
    """A chosen worker and why."""

    worker: Registration
    voice: str
    resident: bool
    reason: str


@dataclass(slots=True)
class Selector:
    """The routing rules as plain data and functions (no sockets), see the module docstring."""

    strategy: Strategy = "least_loaded"
    prefer_device: str = ""
    stale_after_failures: int = 2
    health: dict[str, Health] = field(default_factory=dict)
    affinity: dict[str, str] = field(default_factory=dict)
    recent: dict[str, list[float]] = field(default_factory=dict)
    """When each worker was last handed sessions: its published load lags by a registry
    round trip, so a burst of requests must not all land on the worker that looked idlest."""
    recent_s: float = 1.0
    _turn: itertools.count[int] = field(default_factory=itertools.count)

    def eligible(
        self, workers: list[Registration], request: RouteRequest, *, busy_too: bool = False
    ) -> list[Registration]:
        """Workers that may take the request, whatever the preference (``busy_too``: saturated
        ones as well)."""
        out = []
        for w in workers:
            if request.voice and request.voice not in w.capabilities.get("voices", ()):
                continue
            if self.load(w) >= 1.0 and not busy_too:
                continue
            if self.health.get(w.actor_id, Health()).failures >= self.stale_after_failures:
                continue
            out.append(w)
        return out

    def choose(
        self, workers: list[Registration], request: RouteRequest, session: str
    ) -> Choice | None:
        candidates = self.eligible(workers, request)
        if not candidates:
            return None
        by_id = {w.actor_id: w for w in candidates}
        previous = by_id.get(self.affinity.get(session, ""))
        if previous is not None:
            return self._choice(previous, request, "affinity")
        if self.prefer_device:
            preferred = [w for w in candidates if _device_class(w) == self.prefer_device]
            candidates = preferred or candidates
        resident = [w for w in candidates if self._voice(w, request) in w.resident_models]
        pool = sorted(resident or candidates, key=lambda w: w.actor_id)
        if self.strategy == "round_robin":
            worker = pool[next(self._turn) % len(pool)]
        elif self.strategy == "least_latency":
            worker = min(pool, key=lambda w: (self._latency(w), w.load))
        else:
            worker = min(pool, key=lambda w: (self.load(w), self._latency(w)))
        if session:
            self.affinity[session] = worker.actor_id
        self.recent.setdefault(worker.actor_id, []).append(time.monotonic())
        return self._choice(worker, request, self.strategy)

    def load(self, worker: Registration) -> float:
        """Published load plus the sessions handed to it too recently to show in it."""
        cutoff = time.monotonic() - self.recent_s
        recent = [t for t in self.recent.get(worker.actor_id, ()) if t > cutoff]
        self.recent[worker.actor_id] = recent
        streams = max(1, int(worker.capabilities.get("max_streams", 8)))
        return worker.load + len(recent) / streams

    def forget_worker(self, worker_id: str) -> None:
        """A worker left: its sessions route afresh."""
        self.health.pop(worker_id, None)
        self.affinity = {s: w for s, w in self.affinity.items() if w != worker_id}

    def _choice(self, worker: Registration, request: RouteRequest, reason: str) -> Choice:
        voice = self._voice(worker, request)
        return Choice(worker, voice, voice in worker.resident_models, reason)

    @staticmethod
    def _voice(worker: Registration, request: RouteRequest) -> str:
        return request.voice or str(worker.capabilities.get("default_voice", ""))

    def _latency(self, worker: Registration) -> float:
        latency = self.health.get(worker.actor_id, Health()).latency_s
        return latency if latency is not None else 1.0


def _device_class(worker: Registration) -> str:
    """``cpu`` or ``cuda`` (from ``cuda:N``); a worker that reports none runs on the CPU."""
    return str(worker.capabilities.get("device", "cpu")).partition(":")[0]


class Router(Actor):
    """Routes sessions to TTS workers; see the module docstring."""

    def __init__(self, config: ActorConfig) -> None:
        super().__init__(config)
        self.settings = load_settings(RouterSettings, config.settings, kind=config.kind)
        self.ping_interval_s = self.settings.ping_interval_s
        self.selector = Selector(
            strategy=self.settings.strategy, prefer_device=self.settings.prefer_device
        )
        self.capabilities = {"strategy": self.settings.strategy}
        self.registry.listen(self._on_change)

    async def on_start(self) -> None:
        self.spawn(self._ping_loop())

    async def on_message(self, inbound: Inbound) -> None:
        msg, session = inbound.message, inbound.env.session
        if isinstance(msg, RouteRequest):
            workers = self.registry.alive(WORKER_KIND)
            choice = self.selector.choose(workers, msg, session)
            if choice is None:
                if busy := len(self.selector.eligible(workers, msg, busy_too=True)):
                    why = f"all {busy} TTS worker(s) that can take it are saturated"
                    await self.reply(inbound, Error(code="BUSY", message=why))
                else:
                    await self.reply(inbound, Error(code="NO_WORKER", message=self._why_none(msg)))
                return
            assignment = RouteAssignment(worker_id=choice.worker.actor_id, voice=choice.voice)
            await self.reply(inbound, assignment)
        elif isinstance(msg, RouteRelease):
            self.selector.affinity.pop(session, None)
        else:
            await super().on_message(inbound)

    def _why_none(self, request: RouteRequest) -> str:
        workers = self.registry.alive(WORKER_KIND)
        if not workers:
            return "no TTS worker is registered"
        want = f"voice {request.voice!r}" if request.voice else "any voice"
        return f"none of {len(workers)} TTS worker(s) can take {want} now (not theirs, or stale)"

    def _on_change(self, change: RegistryChange, reg: Registration) -> None:
        if change is RegistryChange.REMOVED and reg.kind == WORKER_KIND:
            self.selector.forget_worker(reg.actor_id)

    async def _ping_loop(self) -> None:
        while True:
            workers = self.registry.alive(WORKER_KIND)
            await asyncio.gather(*(self._ping(w.actor_id) for w in workers))
            await asyncio.sleep(self.ping_interval_s)

    async def _ping(self, worker_id: str) -> None:
        health = self.selector.health.setdefault(worker_id, Health())
        started = time.monotonic()
        try:
            await self.request(worker_id, Ping(), timeout=max(0.1, self.ping_interval_s / 2))
        except BusError:
            health.failures += 1
            return
        rtt = time.monotonic() - started
        health.failures = 0
        health.latency_s = rtt if health.latency_s is None else 0.8 * health.latency_s + 0.2 * rtt
