"""The TTS model manager: default pinned, refcounts, TTL with minimum residency, LRU cap that
never evicts a model in use, one load for concurrent requests, bounded parallel loads."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from adapters.tts import load_engine
from adapters.tts.base import TtsEngine
from adapters.tts.manager import ModelCapacityError, ModelInUse, ModelManager
from adapters.tts.voicepacks import UnknownVoice, VoicePack, discover_voicepacks


def mock_voices(tmp_path: Path, count: int) -> dict[str, VoicePack]:
    for i in range(count):
        folder = tmp_path / f"tone-{i}"
        folder.mkdir()
        (folder / "metadata.yaml").write_text(
            f"model_id: tone-{i}\nfamily: mock\nlanguage: en_US\nsample_rate: 48000\n"
            f"params: {{frequency_hz: {300 + 100 * i}}}\n"
        )
    return discover_voicepacks([tmp_path])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingLoader:
    """The real loader for mock voices, slowed down so concurrent loads overlap."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.calls: list[str] = []
        self.running = 0
        self.max_running = 0
        self._lock = threading.Lock()

    def __call__(self, voice: VoicePack) -> TtsEngine:
        with self._lock:
            self.calls.append(voice.model_id)
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            time.sleep(self.delay_s)
            engine = load_engine(voice)
            engine.warmup()
            return engine
        finally:
            with self._lock:
                self.running -= 1


def manager(tmp_path: Path, count: int = 4, **kw) -> tuple[ModelManager, Clock, CountingLoader]:
    clock = Clock()
    loader = kw.pop("loader", CountingLoader())
    m = ModelManager(
        mock_voices(tmp_path, count), default="tone-0", clock=clock, loader=loader, **kw
    )
    return m, clock, loader


def test_default_loads_at_start_and_is_pinned(tmp_path: Path) -> None:
    async def body() -> None:
        m, clock, _ = manager(tmp_path, ttl_s=10, min_residency_s=0)
        await m.start()
        assert list(m.resident) == ["tone-0"]
        clock.now += 10_000
        assert m.evict_expired() == []
        with pytest.raises(ModelInUse):
            m.unload("tone-0")
        assert "tone-0" in m.resident

    asyncio.run(body())


def test_unknown_voice_lists_the_available_ones(tmp_path: Path) -> None:
    with pytest.raises(UnknownVoice) as info:
        ModelManager(mock_voices(tmp_path, 2), default="nope")
    assert "tone-0, tone-1" in str(info.value)


def test_ttl_evicts_idle_models_after_minimum_residency_but_not_in_use(tmp_path: Path) -> None:
    async def body() -> None:
        changes: list[tuple[str, ...]] = []
        m, clock, _ = manager(tmp_path, ttl_s=60, min_residency_s=300)
        m.on_change = lambda: changes.append(tuple(m.resident))
        await m.start()
        await m.acquire("tone-1")
        await m.load("tone-2")
        clock.now += 120  # idle past the TTL, but resident for less than the minimum
        assert m.evict_expired() == []
        clock.now += 300
        assert m.evict_expired() == ["tone-2"]  # tone-1 is held by an utterance
        m.release("tone-1")
        assert m.evict_expired() == []  # just released: idle for 0 s
        clock.now += 61
        assert m.evict_expired() == ["tone-1"]
        assert list(m.resident) == ["tone-0"]
        assert changes[-1] == ("tone-0",)

    asyncio.run(body())


def test_lru_cap_evicts_least_recently_used_idle_model_never_one_in_use(tmp_path: Path) -> None:
    async def body() -> None:
        m, clock, _ = manager(tmp_path, count=5, max_resident=3)
        await m.start()
        await m.acquire("tone-1")  # in use
        clock.now += 1
        await m.load("tone-2")
        clock.now += 1
        await m.load("tone-3")  # full: evicts tone-2, the only idle non-default model
        assert set(m.resident) == {"tone-0", "tone-1", "tone-3"}
        await m.acquire("tone-3")
        with pytest.raises(ModelCapacityError):
            await m.load("tone-4")  # everything left is pinned or in use
        m.release("tone-3")
        await m.load("tone-4")
        assert set(m.resident) == {"tone-0", "tone-1", "tone-4"}

    asyncio.run(body())


def test_refcount_blocks_unload_until_every_utterance_releases(tmp_path: Path) -> None:
    async def body() -> None:
        m, _, _ = manager(tmp_path)
        await m.start()
        await m.acquire("tone-1")
        await m.acquire("tone-1")
        m.release("tone-1")
        with pytest.raises(ModelInUse):
            m.unload("tone-1")
        m.release("tone-1")
        m.unload("tone-1")
        assert "tone-1" not in m.resident
        m.release("tone-1")  # a stray release of an unloaded model is harmless

    asyncio.run(body())


def test_concurrent_loads_of_one_model_are_deduplicated_and_parallel_loads_bounded(
    tmp_path: Path,
) -> None:
    async def body() -> None:
        loader = CountingLoader(delay_s=0.2)
        m, _, _ = manager(tmp_path, count=4, loader=loader, max_parallel_loads=2)
        await m.start()
        engines = await asyncio.gather(*(m.acquire("tone-1") for _ in range(5)))
        assert loader.calls.count("tone-1") == 1
        assert all(e is engines[0] for e in engines)
        assert m.resident["tone-1"].refs == 5
        await asyncio.gather(m.load("tone-2"), m.load("tone-3"))
        assert loader.max_running == 2
        loader.calls.clear()
        loader.max_running = 0
        (tmp_path / "serial").mkdir()
        m3, _, _ = manager(tmp_path / "serial", loader=loader, max_parallel_loads=1)
        await m3.start()
        await asyncio.gather(m3.load("tone-1"), m3.load("tone-2"), m3.load("tone-3"))
        assert loader.max_running == 1

    asyncio.run(body())
