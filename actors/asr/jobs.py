"""The ASR actor's recognitions waiting for the model, and in which order they run.

One model thread serves every session, so a final (what the supervisor waits for) never waits
behind partials: finals (early or not) and a request's final of up to 30 s (someone waits for
it too: a Wyoming satellite) run first, then a request's longer final (a file), then partials
(a session's or a request's), each rank in the order it came; partials are skipped altogether
while :data:`MAX_QUEUED_FOR_PARTIALS` recognitions wait.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field

import numpy as np

from actors.asr.stream import Early
from bus.audio_format import MIC
from bus.inbound import Inbound

LONG_SAMPLES = 30 * MIC.sample_rate
"""A request's final longer than this (Whisper's window) runs after every short final."""
MAX_QUEUED_FOR_PARTIALS = 2
"""With this many recognitions waiting, partials are skipped: finals first when busy."""


@dataclass(slots=True)
class Job:
    """One recognition: ``partial``, ``early`` (a final computed while VAD still waits out the
    silence) or ``final`` of a session; ``request`` / ``request_partial`` of a transcription
    request (:mod:`.requests`), answered to ``inbound``. A session partial's audio is taken
    when it runs."""

    kind: str
    sid: str
    start: int
    audio: np.ndarray | None
    early: Early | None = None
    """For an early final: the record its result goes to."""
    queued: float = field(default_factory=time.monotonic)
    inbound: Inbound | None = None
    """For a request: the chunk that asked, to answer."""

    @property
    def rank(self) -> int:
        if self.kind in ("partial", "request_partial"):
            return 2
        if self.kind == "request" and self.audio is not None and len(self.audio) > LONG_SAMPLES:
            return 1
        return 0


class JobQueue:
    """Jobs waiting for the model thread: finals (early or not) before partials, each kind in
    order; bounded, so a stalled model drops work instead of growing without end."""

    def __init__(self, maxsize: int) -> None:
        self._jobs: asyncio.PriorityQueue[tuple[int, int, Job]] = asyncio.PriorityQueue(
            maxsize=maxsize
        )
        self._order = itertools.count()

    def put(self, job: Job) -> bool:
        """Queue ``job``; False (and it is dropped) when the queue is full."""
        try:
            self._jobs.put_nowait((job.rank, next(self._order), job))
        except asyncio.QueueFull:
            return False
        return True

    async def get(self) -> Job:
        """The most urgent job, waiting for one if none is queued."""
        _, _, job = await self._jobs.get()
        return job

    def room_for_partials(self) -> bool:
        """Few enough jobs wait that a partial may be queued."""
        return self._jobs.qsize() < MAX_QUEUED_FOR_PARTIALS
