"""One utterance on a TTS worker: text in, 20 ms frames out under credit, pausable, stoppable.

Two tasks per utterance. The producer plans and renders units in a worker thread while less
than :data:`MAX_AHEAD_S` of rendered audio waits to be sent, and waits while paused: PAUSE
pauses synthesis, not just sending. The sender cuts rendered audio into 1920-byte frames and
sends each only while running and holding credit, so the consumer's playout bounds how far
ahead the worker runs. STOP ends at the next frame boundary with ``tts.end`` reason ``stopped`` (or
``barged_in``); RESUME continues with the next unsent frame, nothing lost or repeated.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from adapters.tts.base import FrameSlicer, Renderer, SynthesisOptions, TtsEngine
from adapters.tts.normalize import normalize
from adapters.tts.text import SentenceBuffer, TextError, check_text
from bus.audio_format import BOT, SAMPLE_BYTES
from bus.schema import Message
from bus.schema.tts import EndReason, TtsEnd, TtsFrame

Send = Callable[[Message], Awaitable[bool]]
T = TypeVar("T")

MAX_AHEAD_S = 3.0
"""Rendered audio the producer may hold unsent before it waits (bounds memory per utterance;
enough that the next unit is ready before the audio runs out)."""
BYTES_PER_SECOND = BOT.sample_rate * SAMPLE_BYTES
MAX_AHEAD_BYTES = int(MAX_AHEAD_S * BYTES_PER_SECOND)


class RenderScheduler:
    """A worker's renders, most urgent first: the utterance whose rendered audio runs out
    soonest renders next (a new utterance's first unit is the most urgent of all). At most
    ``slots`` renders run at once; ONNX Runtime already spreads one over the cores, and ten
    renders sharing two cores would all finish late instead of one finishing in time."""

    def __init__(self, slots: int = 1) -> None:
        self._slots = slots
        self._free = slots
        self._waiting: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._rendering: set[asyncio.Task[Any]] = set()  # referenced until they end

    @property
    def idle(self) -> bool:
        """No render running (in a thread, even one whose utterance has ended) or waiting."""
        return self._free == self._slots and not self._waiting

    async def run(self, deadline: float, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a thread once its turn comes; ``deadline`` (monotonic seconds) is
        when its utterance would fall silent without it."""
        if self._free > 0 and not self._waiting:
            self._free -= 1
        else:
            turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (deadline, next(self._order), turn))
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._release()  # the slot was just handed to us: pass it on
                raise
        # A thread cannot be cancelled: the slot is held until the render really ends, not
        # when its utterance stops waiting for it, or stopped utterances' renders pile up on
        # the cores (and in ONNX Runtime's memory) beyond ``slots``.
        render = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        self._rendering.add(render)
        render.add_done_callback(self._rendered)
        return await asyncio.shield(render)

    def _rendered(self, render: asyncio.Task[Any]) -> None:
        self._rendering.discard(render)
        if not render.cancelled():
            render.exception()  # retrieved: an abandoned render's error is not "never retrieved"
        self._release()

    def _release(self) -> None:
        while self._waiting:
            _, _, turn = heapq.heappop(self._waiting)
            if not turn.done():
                turn.set_result(None)
                return
        self._free += 1


class ConsumerGone(Exception):
    """Frames can no longer be delivered: the consumer disconnected."""


class _Starved(Exception):
    """No credit or resume for ``max_wait_s``."""


class _Stopped(Exception):
    """STOP arrived; the utterance ends at this frame boundary."""


class Utterance:
    """State and tasks of one utterance; see the module docstring."""

    def __init__(
        self,
        utterance_id: str,
        options: SynthesisOptions,
        send: Send,
        *,
        credit: int,
        max_credit: int,
        scheduler: RenderScheduler | None = None,
        max_wait_s: float = 60.0,
    ) -> None:
        self.utterance_id = utterance_id
        self.options = options
        self.scheduler = scheduler or RenderScheduler()
        self.credit = min(credit, max_credit)
        self.max_credit = max_credit
        self.max_wait_s = max_wait_s
        self.frames = 0
        """Frames sent so far."""
        self.first_frame_s: float | None = None
        """Seconds from :meth:`start` to the first frame sent."""
        self._started = 0.0
        self.paused = False
        self._send = send
        self._buffer = SentenceBuffer()
        self._final = False
        self._queued = 0
        self._sentences: asyncio.Queue[str | None] = asyncio.Queue()
        self._pcm: asyncio.Queue[tuple[bytes, int, int] | None] = asyncio.Queue()
        """Rendered audio: (pcm, words spoken before it, words spoken by its end)."""
        self._ahead_bytes = 0
        self._room = asyncio.Event()
        self._room.set()
        self._wake = asyncio.Event()
        self._running = asyncio.Event()
        self._running.set()
        self._stop_reason: EndReason | None = None
        self._stopped = asyncio.Event()
        self.task: asyncio.Task[EndReason] | None = None
        """Running after :meth:`start`."""
        self._engine: Awaitable[TtsEngine] | None = None

    # ------------------------------------------------------------------ from the worker

    def feed(self, text: str, final: bool) -> None:
        """Add text; sentences go to synthesis as they complete. Raises TextError."""
        if self._final:
            raise TextError("INVALID_MESSAGE", "text after the final chunk")
        sentences = self._buffer.push(check_text(text))
        if final:
            sentences += self._buffer.flush()
            if not sentences and not self._queued:
                raise TextError("EMPTY_TEXT", "there is no text to speak")
            self._final = True
        for sentence in sentences:
            self._sentences.put_nowait(sentence)
        self._queued += len(sentences)
        if final:
            self._sentences.put_nowait(None)

    def grant(self, frames: int) -> None:
        """The consumer accepts ``frames`` more frames."""
        self.credit = min(self.max_credit, self.credit + max(0, frames))
        self._wake.set()

    def pause(self) -> None:
        self.paused = True
        self._running.clear()

    def resume(self) -> None:
        self.paused = False
        self._running.set()
        self._wake.set()

    def stop(self, reason: EndReason = EndReason.STOPPED) -> None:
        """End at the next frame boundary (or at once if waiting for audio)."""
        if self._stop_reason is None:
            self._stop_reason = reason
            self._stopped.set()
            self._wake.set()

    def start(self, engine: Awaitable[TtsEngine]) -> asyncio.Task[EndReason]:
        """Start speaking with ``engine`` once it is ready (a model may still be loading: the
        worker keeps serving meanwhile). The task ends after ``tts.end``, with its reason."""
        self._engine = engine
        self._started = time.monotonic()
        self.task = asyncio.get_running_loop().create_task(self._run())
        return self.task

    # ------------------------------------------------------------------ tasks

    async def _run(self) -> EndReason:
        producer = asyncio.get_running_loop().create_task(self._produce())
        slicer = FrameSlicer()
        error, words = "", 0
        try:
            while (chunk := await self._next_pcm(producer)) is not None:
                pcm, before, words = chunk
                frames = slicer.push(pcm)
                for i, frame in enumerate(frames, 1):  # words spread evenly over the chunk
                    await self._send_frame(frame, before + (words - before) * i // len(frames))
            tail = slicer.flush()
            if tail is not None:
                await self._send_frame(tail, words)
            reason = EndReason.COMPLETED
        except _Stopped:
            reason = self._stop_reason or EndReason.STOPPED
        except ConsumerGone:
            return EndReason.ERROR  # nobody to tell
        except _Starved as exc:
            reason, error = EndReason.ERROR, str(exc)
        except Exception as exc:  # a synthesis failure must reach the consumer as a message
            reason, error = EndReason.ERROR, f"{type(exc).__name__}: {exc}"[:1000]
        finally:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await producer
        end = TtsEnd(utterance_id=self.utterance_id, reason=reason, frames=self.frames, error=error)
        await self._send(end)
        return reason

    async def _next_pcm(self, producer: asyncio.Task[None]) -> tuple[bytes, int, int] | None:
        getter = asyncio.ensure_future(self._pcm.get())
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait({getter, producer, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not getter.done():
                getter.cancel()
        if self._stopped.is_set():
            raise _Stopped
        if getter.done() and not getter.cancelled():
            return getter.result()
        producer.result()  # the producer ended first: raise its error
        raise RuntimeError("synthesis ended without finishing the utterance")

    async def _produce(self) -> None:
        assert self._engine is not None, "_produce() before start()"
        engine = await self._engine
        renderer = Renderer(engine, self.options)
        first, words = True, 0
        while (sentence := await self._sentences.get()) is not None:
            await self._running.wait()
            units = await asyncio.to_thread(plan, engine, sentence, first)
            first, sentence_start, sentence_words = False, words, len(sentence.split())
            for n, unit in enumerate(units, 1):
                # a unit's words: its share of the sentence (units are cut at word boundaries)
                before, words = words, sentence_start + sentence_words * n // len(units)
                while self._ahead_bytes >= MAX_AHEAD_BYTES:
                    self._room.clear()
                    await self._room.wait()
                await self._running.wait()
                runs_out = time.monotonic() + self._ahead_bytes / BYTES_PER_SECOND
                pcm = await self.scheduler.run(runs_out, renderer.render, unit)
                self._ahead_bytes += len(pcm)
                await self._pcm.put((pcm, before, words))
        tail = await asyncio.to_thread(renderer.finish)
        self._ahead_bytes += len(tail)
        await self._pcm.put((tail, words, words))
        await self._pcm.put(None)

    async def _send_frame(self, pcm: bytes, words: int) -> None:
        waited_from = time.monotonic()
        while self.paused or self.credit <= 0 or self._stopped.is_set():
            if self._stopped.is_set():
                raise _Stopped
            left = waited_from + self.max_wait_s - time.monotonic()
            if left <= 0:
                why = "paused" if self.paused else "without credit"
                raise _Starved(f"{why} for {self.max_wait_s:g} s: the consumer stalled")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), left)
        frame = TtsFrame(utterance_id=self.utterance_id, sequence=self.frames, pcm=pcm, words=words)
        if not await self._send(frame):
            raise ConsumerGone(self.utterance_id)
        if self.frames == 0:
            self.first_frame_s = time.monotonic() - self._started
        self.frames += 1
        self.credit -= 1
        self._ahead_bytes -= len(pcm)
        if self._ahead_bytes < MAX_AHEAD_BYTES:
            self._room.set()


def plan(engine: TtsEngine, sentence: str, first: bool) -> list[Any]:
    """``sentence``'s units, planned as the voice should read it (:func:`normalize`); its words
    are counted as the client wrote them."""
    return engine.plan(normalize(sentence, engine.voice.language), first)
