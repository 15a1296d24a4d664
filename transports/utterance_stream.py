"""One utterance streamed from a TTS worker to a consumer: the worker's side of the bargain.

A worker sends a consumer frames against credit: ``tts.start`` grants the first ``lead`` frames,
and every ``tts.credit`` as many more as the consumer has used. :class:`UtteranceStream` is
that accounting for one utterance with no I/O of its own: it says which message to send and
when (start, more text, credit, pause/resume/stop), and whether the worker has gone quiet for
too long. Three consumers share it: the gateway's playout (credit as frames are played, so a
paused playout pauses synthesis), ``POST /v1/synthesize`` and ``duplex say`` (credit as frames
arrive). :class:`StreamClient` runs streams for an actor: routing with the BUSY wait, sending,
and the watchdog that asks a quiet worker about the utterance (``tts.query``) so that a dead
worker, or one that dropped the utterance, ends it with ``error`` instead of leaving the
consumer waiting.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from bus.errors import BusError, RemoteError
from bus.inbound import Inbound, Via
from bus.logs import kv
from bus.schema import Message
from bus.schema.control import Pause, Resume, Stop
from bus.schema.routing import RouteAssignment, RouteRelease, RouteRequest
from bus.schema.system import Error, Registration
from bus.schema.tts import EndReason, TtsCredit, TtsEnd, TtsFrame, TtsQuery, TtsStart, TtsText

STALL_S = 1.0
"""No frame for this long while an utterance streams (and its consumer is not paused): ask the
worker whether it still has it."""


@dataclass(slots=True)
class UtteranceStream:
    """One utterance's stream state; see the module docstring."""

    utterance_id: str
    session: str
    text: str
    voice: str = ""
    final: bool = True
    """False while more text may follow (:meth:`add_text`)."""
    lead: int = 10
    """Frames the worker may send before the first credit."""
    credit_batch: int = 5
    """Frames used before they are granted back in one ``tts.credit``."""
    options: dict[str, Any] = field(default_factory=dict)
    worker_id: str = ""
    """Set once routed; messages for the worker wait until then."""
    ended: bool = False
    """The worker sent ``tts.end`` (or the stream failed): nothing more comes."""
    received: int = 0
    paused: bool = False
    """The consumer paused: the worker is paused and its quiet is not a stall."""
    last_frame: float = field(default_factory=time.monotonic)
    spoken_text: str = ""
    """All text given so far (what ``tts_start`` shows, what the person may have heard)."""
    _unused: int = 0
    _held_text: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.spoken_text = self.text.strip()

    def start(self, worker_id: str, voice: str) -> TtsStart:
        """The ``tts.start`` for the routed worker (text given while routing included)."""
        self.worker_id, self.voice = worker_id, voice
        text = "".join([self.text, *self._held_text])
        self._held_text.clear()
        self.last_frame = time.monotonic()
        return TtsStart(
            utterance_id=self.utterance_id,
            voice=voice,
            text=text,
            final=self.final,
            credit=self.lead,
            options=self.options,
        )

    def add_text(self, text: str, final: bool) -> TtsText | None:
        """More text of a streamed utterance: a ``tts.text`` to send, or None (held until the
        start, or the stream is over)."""
        if self.ended or self.final:
            return None
        self.final = final
        self.spoken_text = f"{self.spoken_text} {text.strip()}".strip()
        if not self.worker_id:
            self._held_text.append(text)
            return None
        return TtsText(utterance_id=self.utterance_id, text=text, final=final)

    def frame(self, msg: TtsFrame) -> bool:
        """A frame arrived: True if it belongs to this live stream."""
        if msg.utterance_id != self.utterance_id or self.ended:
            return False
        self.received += 1
        self.last_frame = time.monotonic()
        return True

    def used(self, frames: int = 1) -> TtsCredit | None:
        """The consumer used ``frames`` frames: a ``tts.credit`` once a batch is due."""
        self._unused += frames
        if self._unused < self.credit_batch or self.ended or not self.worker_id:
            return None
        credit, self._unused = TtsCredit(utterance_id=self.utterance_id, frames=self._unused), 0
        return credit

    def end(self, msg: TtsEnd) -> bool:
        """The worker's ``tts.end``: True if it ends this stream."""
        if msg.utterance_id != self.utterance_id or self.ended:
            return False
        self.ended = True
        return True

    def control(self, msg: Pause | Resume | Stop) -> Pause | Resume | Stop | None:
        """Pause, resume or stop the worker's synthesis: the message to send, if any."""
        if isinstance(msg, Pause | Resume):
            self.paused = isinstance(msg, Pause)
            self.last_frame = time.monotonic()
        if self.ended or not self.worker_id:
            if isinstance(msg, Stop):
                self.ended = True  # a stream stopped while routing never starts
            return None
        if isinstance(msg, Stop):
            self.ended = True
        return msg

    def stalled(self, now: float, stall_s: float = STALL_S) -> bool:
        """Started, not over, not paused, and no frame for ``stall_s``."""
        return (
            bool(self.worker_id)
            and not self.ended
            and not self.paused
            and now - self.last_frame >= stall_s
        )


class StreamSink(Protocol):
    """Where a stream's audio goes (a session's playout, an HTTP body)."""

    async def on_frame(self, stream: UtteranceStream, msg: TtsFrame) -> None: ...

    async def on_end(self, stream: UtteranceStream, reason: EndReason, error: str) -> None: ...

    async def on_error(self, stream: UtteranceStream, code: str, message: str) -> None:
        """The worker refused or failed the utterance; its end follows."""

    async def on_refused(self, stream: UtteranceStream, code: str, message: str) -> None:
        """No worker could be routed: the stream never started, and is over."""


class Registry(Protocol):
    def alive(self, kind: str) -> list[Registration]: ...

    def get(self, actor_id: str) -> Registration | None: ...


class BusPort(Protocol):
    """What a stream client needs of its actor (:class:`bus.runtime.Actor` is one)."""

    id: str

    @property
    def registry(self) -> Registry: ...

    def send_or_warn(self, peer_id: str, msg: Message, session: str = "") -> bool: ...

    async def request(
        self, peer_id: str, msg: Message, *, session: str = "", timeout: float | None = None
    ) -> Message: ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]: ...


log = logging.getLogger("duplex.streams")


class StreamClient:
    """Runs an actor's utterance streams; see the module docstring. Streams are keyed by
    (session, utterance id); a session has any number (HTTP syntheses use one session each)."""

    def __init__(
        self,
        bus: BusPort,
        *,
        busy_wait_s: float = 5.0,
        stall_s: float = STALL_S,
        on_busy_wait: Callable[[], None] | None = None,
    ) -> None:
        self.bus = bus
        self.busy_wait_s = busy_wait_s
        self.stall_s = stall_s
        self.on_busy_wait = on_busy_wait
        self.streams: dict[tuple[str, str], tuple[UtteranceStream, StreamSink]] = {}

    def open(self, stream: UtteranceStream, sink: StreamSink) -> None:
        """Route ``stream`` and start it on the chosen worker (in a task: routing waits for
        the router, and a handler must not)."""
        self.streams[(stream.session, stream.utterance_id)] = (stream, sink)
        self.bus.spawn(self._start(stream, sink))

    async def _start(self, stream: UtteranceStream, sink: StreamSink) -> None:
        try:
            route = await self.route(stream.session, stream.voice)
        except RemoteError as exc:
            self._forget(stream)
            if not stream.ended:
                stream.ended = True
                await sink.on_refused(stream, exc.code, exc.message)
            return
        if stream.ended:  # stopped while routing
            self._forget(stream)
            return
        start = stream.start(route.worker_id, route.voice)
        if not self.bus.send_or_warn(route.worker_id, start, stream.session):
            await self._fail(stream, sink, "the TTS worker could not be reached")

    async def route(self, session: str, voice: str) -> RouteAssignment:
        """A worker for ``voice`` from the router, asking again while every worker that fits
        is saturated (``BUSY``) for ``busy_wait_s`` at most: a reply a little late beats none.
        RemoteError (``NO_WORKER``, ``BUSY``, ...) when there is none."""
        deadline = time.monotonic() + self.busy_wait_s
        while True:
            routers = self.bus.registry.alive("router")
            if not routers:
                raise RemoteError("NO_WORKER", "no router is running")
            try:
                reply = await self.bus.request(
                    routers[0].actor_id, RouteRequest(voice=voice), session=session, timeout=2.0
                )
            except RemoteError as exc:
                if exc.code == "BUSY" and time.monotonic() < deadline:
                    if self.on_busy_wait is not None:
                        self.on_busy_wait()
                    await asyncio.sleep(0.1)
                    continue
                raise
            except BusError as exc:
                raise RemoteError("NO_WORKER", str(exc) or "the router did not answer") from exc
            if not isinstance(reply, RouteAssignment):
                raise RemoteError("NO_WORKER", "the router gave no worker")
            return reply

    def send(self, stream: UtteranceStream, msg: Message | None) -> None:
        """Send ``msg`` (from the stream's methods) to its worker, if there is one to send."""
        if msg is not None and stream.worker_id:
            self.bus.send_or_warn(stream.worker_id, msg, stream.session)

    async def on_message(self, inbound: Inbound) -> bool:
        """A worker's frame, end or error for one of the streams; False for anything else."""
        msg, session = inbound.message, inbound.env.session
        if isinstance(msg, TtsFrame | TtsEnd):
            entry = self.streams.get((session, msg.utterance_id))
            if entry is None:
                return isinstance(msg, TtsFrame)  # a late frame of a forgotten stream
            stream, sink = entry
            if isinstance(msg, TtsFrame):
                if stream.frame(msg):
                    await sink.on_frame(stream, msg)
            elif stream.end(msg):
                self._forget(stream)
                await sink.on_end(stream, msg.reason, msg.error)
            return True
        if isinstance(msg, Error) and inbound.via is Via.PEER:
            if msg.code == "UNKNOWN_UTTERANCE":
                return True  # a control that crossed the utterance's end: nothing was lost
            # A worker refused (an unknown voice, bad text): its tts.end follows.
            for (sid, _), (stream, sink) in list(self.streams.items()):
                if sid == session and stream.worker_id == inbound.env.src:
                    await sink.on_error(stream, msg.code, msg.message)
                    return True
        return False

    def release(self, session: str) -> None:
        """The session is over: the router forgets its worker affinity."""
        routers = self.bus.registry.alive("router")
        if routers:
            self.bus.send_or_warn(routers[0].actor_id, RouteRelease(), session)

    def stop(self, stream: UtteranceStream, reason: EndReason = EndReason.STOPPED) -> None:
        """Stop the worker's synthesis; the stream is forgotten (late frames are dropped)."""
        self.send(stream, stream.control(Stop(utterance_id=stream.utterance_id, reason=reason)))
        self._forget(stream)

    def _forget(self, stream: UtteranceStream) -> None:
        self.streams.pop((stream.session, stream.utterance_id), None)

    async def _fail(self, stream: UtteranceStream, sink: StreamSink, why: str) -> None:
        log.warning(
            "utterance lost mid-way",
            extra=kv(session=stream.session, worker=stream.worker_id, error=why),
        )
        # A live worker that was only slow to answer must not keep the stream (and a stream
        # slot) waiting for credit for ever.
        self.send(stream, Stop(utterance_id=stream.utterance_id, reason=EndReason.ERROR))
        stream.ended = True
        self._forget(stream)
        await sink.on_end(stream, EndReason.ERROR, why)

    async def watchdog(self, interval_s: float = 0.25) -> None:
        """Forever: a stream whose worker went quiet is asked about; lost ones end ``error``."""
        while True:
            await asyncio.sleep(interval_s)
            now = time.monotonic()
            for stream, sink in list(self.streams.values()):
                if stream.stalled(now, self.stall_s):
                    stream.last_frame = now  # one query at a time
                    self.bus.spawn(self._query(stream, sink))

    async def _query(self, stream: UtteranceStream, sink: StreamSink) -> None:
        # Not just "is the worker alive": a live worker may have dropped this utterance (say
        # its frames found no way back), and pinging it would wait forever.
        query = TtsQuery(utterance_id=stream.utterance_id)
        try:
            await self.bus.request(stream.worker_id, query, session=stream.session, timeout=0.5)
            stream.last_frame = time.monotonic()
        except BusError as exc:
            if not stream.ended:
                await self._fail(stream, sink, str(exc))
