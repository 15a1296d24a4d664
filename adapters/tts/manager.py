"""The model manager: which voices a TTS worker holds in memory, and when to let them go.

- The default voice loads at start (a failure stops the worker before it registers) and is
  pinned by configuration: never evicted, never unloaded. A preload list loads after it.
- Utterances hold a reference while they speak; a model in use is never evicted.
- A model idle for ``ttl_s`` is unloaded, but only after ``min_residency_s`` in memory.
- At most ``max_resident`` models stay loaded: loading another evicts the least recently used
  idle one, or fails with :class:`ModelCapacityError` when all are in use.
- Concurrent loads of one model share a single load; at most ``max_parallel_loads`` run at once.
- ``on_change`` is called whenever the resident set changes (the worker republishes it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from adapters.devices import Device
from adapters.tts import load_engine
from adapters.tts.base import TtsEngine
from adapters.tts.voicepacks import UnknownVoice, VoicePack
from bus.logs import kv

log = logging.getLogger("duplex.models")


class ModelCapacityError(RuntimeError):
    """Every resident model is in use and the resident cap is reached."""


class ModelInUse(RuntimeError):
    """An unload was asked for a model that is pinned or speaking."""


@dataclass(slots=True)
class Resident:
    """A loaded model and its bookkeeping."""

    engine: TtsEngine
    loaded_at: float
    last_used: float
    refs: int = 0


def load_and_warm(voice: VoicePack, device: Device | None = None) -> TtsEngine:
    """Load ``voice`` (on ``device``) and run it once (blocking; call it in a thread)."""
    engine = load_engine(voice, device)
    engine.warmup()
    return engine


class ModelManager:
    """Loads, shares, counts and evicts a worker's voice models."""

    def __init__(
        self,
        voices: dict[str, VoicePack],
        *,
        default: str,
        preload: tuple[str, ...] = (),
        max_resident: int = 4,
        ttl_s: float = 600.0,
        min_residency_s: float = 30.0,
        max_parallel_loads: int = 1,
        loader: Callable[[VoicePack], TtsEngine] = load_and_warm,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        if default not in voices:
            raise UnknownVoice(default, voices)
        if max_resident < 1 or max_parallel_loads < 1:
            raise ValueError("max_resident and max_parallel_loads must be at least 1")
        self.voices = voices
        self.default = default
        self.preload = preload
        self.max_resident = max_resident
        self.ttl_s = ttl_s
        self.min_residency_s = min_residency_s
        self.loader = loader
        self.clock = clock
        self.on_change = on_change
        self.resident: dict[str, Resident] = {}
        self.loads = 0
        """Loads actually run (deduplicated requests do not count)."""
        self._loading: dict[str, asyncio.Future[Resident]] = {}
        self._slots = asyncio.Semaphore(max_parallel_loads)

    async def start(self) -> None:
        """Load the default model (errors propagate), then the preload list (errors logged)."""
        await self.load(self.default)
        for model_id in self.preload:
            try:
                await self.load(model_id)
            except (UnknownVoice, ModelCapacityError, OSError, ValueError) as exc:
                log.warning("preload failed", extra=kv(model=model_id, error=str(exc)))

    async def load(self, model_id: str) -> Resident:
        """The resident model ``model_id``, loading it if needed (one load however many ask)."""
        if model_id not in self.voices:
            raise UnknownVoice(model_id, self.voices)
        resident = self.resident.get(model_id)
        if resident is not None:
            return resident
        pending = self._loading.get(model_id)
        if pending is None:
            pending = self._loading[model_id] = asyncio.ensure_future(self._load(model_id))
        return await asyncio.shield(pending)

    async def _load(self, model_id: str) -> Resident:
        try:
            async with self._slots:
                self._make_room()
                started = time.monotonic()
                self.loads += 1
                engine = await asyncio.to_thread(self.loader, self.voices[model_id])
                now = self.clock()
                resident = self.resident[model_id] = Resident(engine, now, now)
                seconds = round(time.monotonic() - started, 2)
                log.info("model loaded", extra=kv(model=model_id, seconds=seconds))
        finally:
            self._loading.pop(model_id, None)
        self._changed()
        return resident

    async def acquire(self, model_id: str) -> TtsEngine:
        """Hold ``model_id`` for an utterance (load it if needed); pair with :meth:`release`."""
        resident = await self.load(model_id)
        resident.refs += 1
        resident.last_used = self.clock()
        return resident.engine

    def release(self, model_id: str) -> None:
        """An utterance is done with ``model_id``."""
        resident = self.resident.get(model_id)
        if resident is not None and resident.refs > 0:
            resident.refs -= 1
            resident.last_used = self.clock()

    def unload(self, model_id: str) -> None:
        """Unload now; ModelInUse for the pinned default or a model in use."""
        if model_id not in self.voices:
            raise UnknownVoice(model_id, self.voices)
        resident = self.resident.get(model_id)
        if resident is None:
            return
        if model_id == self.default:
            raise ModelInUse(f"{model_id} is the default voice; it stays loaded")
        if resident.refs:
            raise ModelInUse(f"{model_id} is speaking {resident.refs} utterance(s)")
        self._drop(model_id, "unloaded")

    def evict_expired(self) -> list[str]:
        """Unload idle models past their TTL (and their minimum residency); returns their ids."""
        now = self.clock()
        expired = [
            model_id
            for model_id, r in self.resident.items()
            if self._evictable(model_id, r)
            and now - r.last_used >= self.ttl_s
            and now - r.loaded_at >= self.min_residency_s
        ]
        for model_id in expired:
            self._drop(model_id, "ttl")
        return expired

    def _evictable(self, model_id: str, resident: Resident) -> bool:
        return model_id != self.default and resident.refs == 0

    def _make_room(self) -> None:
        while len(self.resident) >= self.max_resident:
            idle = [(r.last_used, m) for m, r in self.resident.items() if self._evictable(m, r)]
            if not idle:
                raise ModelCapacityError(
                    f"{len(self.resident)} models resident (the cap) and all are in use"
                )
            self._drop(min(idle)[1], "lru")

    def _drop(self, model_id: str, reason: str) -> None:
        resident = self.resident.pop(model_id)
        resident.engine.close()
        log.info("model unloaded", extra=kv(model=model_id, reason=reason))
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def status(self) -> list[dict[str, Any]]:
        """Resident models with their reference counts and ages."""
        now = self.clock()
        return [
            {
                "model_id": m,
                "refs": r.refs,
                "pinned": m == self.default,
                "resident_s": round(now - r.loaded_at, 1),
                "idle_s": round(now - r.last_used, 1),
            }
            for m, r in self.resident.items()
        ]
