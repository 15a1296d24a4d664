"""The session supervisor: every session's turn core (:mod:`actors.supervisor.turns`), wired to
the bus (docs/architecture.md, "Gateway ⇄ supervisor").

Consumes on its inbox, from gateways: ``session.opened``, ``session.config``, ``session.text``,
``control.pause`` / ``control.resume`` / ``control.stop`` (already applied by the gateway),
``playout.event`` and ``session.closed``; on the event bus: ``vad.*`` and ``asr.transcript``.
Emits to the session's gateway: ``session.state`` (also published on
``session.state.<session>``, for VAD), ``playout.speak`` / ``playout.text``,
``control.barge_in_outcome``, ``control.stop``, ``session.reply``, ``error``, and
``session.closed`` (idle timeout, maximum duration). It never talks to TTS workers or the
router: the gateway routes and streams every utterance.

This actor turns messages into core events, runs the dialogue adapter for each reply (its
stream cut into sentences and fed back to the core), ticks the cores' deadlines and counts.
Settings: :class:`~actors.supervisor.settings.SupervisorSettings`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter

from actors.supervisor.commands import (
    CancelReply,
    CloseSession,
    Command,
    Count,
    Metric,
    ReplyDone,
    ReplyFailed,
    ReplySentence,
    StartReply,
    Tell,
    TurnEvent,
)
from actors.supervisor.settings import SupervisorSettings
from actors.supervisor.turns import TurnTaking
from adapters.dialogue import Dialogue, DialogueError, load_dialogue
from adapters.tts.text import SentenceBuffer, TextError, without_controls
from bus import topics
from bus.errors import BusError
from bus.inbound import Inbound
from bus.logs import kv
from bus.runtime import Actor
from bus.schema import Message
from bus.schema.asr import Transcript
from bus.schema.control import Pause, Resume, Stop
from bus.schema.session import (
    PlayoutEvent,
    SessionClosed,
    SessionConfig,
    SessionOpened,
    SessionState,
    SessionText,
    StateChanged,
)
from bus.schema.system import Error
from bus.schema.vad import SpeechEnd, SpeechStart
from bus.settings import load_settings
from bus.topology import ActorConfig

_EVENTS = (
    SessionConfig,
    SessionText,
    SessionClosed,
    Pause,
    Resume,
    Stop,
    PlayoutEvent,
    SpeechStart,
    SpeechEnd,
    Transcript,
)
_SILENT_IF_UNKNOWN = (SessionClosed, PlayoutEvent, SpeechStart, SpeechEnd, Transcript)
"""Late news of a session already gone: not worth an error."""
MIN_SLEEP_S = 0.005
"""The tick loop never spins, even if a core's deadline fails to move on."""
FULL_LOAD_SESSIONS = 1000
"""Sessions at which the supervisor reports a load of 1."""


@dataclass(slots=True)
class _Session:
    session_id: str
    gateway: str
    turns: TurnTaking
    replies: dict[int, asyncio.Task[None]] = field(default_factory=dict)
    """The dialogue running for each reply being generated, by turn."""


def _counters(registry: CollectorRegistry) -> dict[Metric, Counter]:
    def counter(name: str, doc: str, *labels: str) -> Counter:
        return Counter(name, doc, labels, registry=registry)

    return {
        Metric.BARGE_IN: counter("duplex_barge_ins_total", "Barge-ins (speech over the bot)"),
        Metric.FALSE_INTERRUPTION: counter(
            "duplex_false_interruptions_total", "Barge-ins that held no words: playout resumed"
        ),
        Metric.ECHO_IGNORED: counter(
            "duplex_echo_transcripts_total", "Transcripts taken for the bot's own voice"
        ),
        Metric.USER_TURN: counter("duplex_user_turns_total", "User turns answered"),
        Metric.REFUSED_TRANSITION: counter(
            "duplex_session_transitions_refused_total",
            "Session events that made no sense in the session's state (logged, then ignored)",
        ),
        Metric.DIALOGUE_ERROR: counter("duplex_dialogue_errors_total", "Dialogue failures", "code"),
    }


class Supervisor(Actor):
    """Runs sessions; see the module docstring."""

    def __init__(self, config: ActorConfig) -> None:
        super().__init__(config)
        self.settings = load_settings(SupervisorSettings, config.settings, kind=self.kind)
        self.sessions: dict[str, _Session] = {}
        self.dialogues: dict[str, Dialogue] = {}
        self.counters = _counters(self.metrics.registry)
        self._wake = asyncio.Event()
        self._wake_at = math.inf
        """When the tick loop wakes next unless :attr:`_wake` is set."""
        self.subscribe(topics.VAD)
        self.subscribe(topics.ASR)

    async def on_start(self) -> None:
        self.spawn(self._tick_loop())

    async def on_stop(self) -> None:
        for dialogue in self.dialogues.values():
            await dialogue.close()

    async def on_message(self, inbound: Inbound) -> None:
        msg, sid = inbound.message, inbound.env.session
        if isinstance(msg, SessionOpened):
            if sid not in self.sessions:
                turns = TurnTaking(sid, self.settings, time.monotonic())
                opened = self.sessions[sid] = _Session(sid, msg.gateway or inbound.env.src, turns)
                self._feed(opened, msg)
                await self.update_registration(load=self._load())
            return
        session = self.sessions.get(sid)
        if session is None:
            if not isinstance(msg, _SILENT_IF_UNKNOWN):
                await self.reply(inbound, Error(code="UNKNOWN_SESSION", message=sid))
        elif isinstance(msg, _EVENTS):
            self._feed(session, msg)
        else:
            await super().on_message(inbound)

    # ------------------------------------------------------------------ the core

    def _feed(self, session: _Session, event: TurnEvent) -> None:
        self._execute(session, session.turns.handle(event, time.monotonic()))

    def _execute(self, session: _Session, commands: list[Command]) -> None:
        for command in commands:
            match command:
                case Tell(message=message):
                    self._tell(session, message)
                case StartReply():
                    task = self.spawn(self._reply(session, command))
                    session.replies[command.turn] = task
                case CancelReply(turn=turn):
                    running = session.replies.pop(turn, None)
                    if running is not None and running is not asyncio.current_task():
                        running.cancel()
                case Count():
                    self._count(session, command)
                case CloseSession(reason=reason):
                    self._tell(session, SessionClosed(reason=reason))
        if session.turns.state is SessionState.ENDED:
            self._forget(session)
        elif session.turns.next_tick < self._wake_at:
            self._wake.set()

    def _tell(self, session: _Session, msg: Message) -> None:
        """To the session's gateway, in order with everything else sent there."""
        sid = session.session_id
        try:
            self.send_nowait(session.gateway, msg, session=sid)
        except BusError as exc:
            self.log.warning("gateway unreachable", extra=kv(session=sid, error=str(exc)))
        if isinstance(msg, StateChanged):  # VAD's thresholds follow the state
            self.spawn(self.publish(topics.topic(topics.STATE, sid), msg, session=sid))

    def _count(self, session: _Session, count: Count) -> None:
        counter = self.counters[count.metric]
        if count.metric is Metric.DIALOGUE_ERROR:
            counter.labels(count.label).inc()
            return
        counter.inc()
        if count.metric is not Metric.USER_TURN:
            self.log.info(count.metric.value, extra=kv(session=session.session_id))

    def _forget(self, session: _Session) -> None:
        if self.sessions.pop(session.session_id, None) is None:
            return
        for task in session.replies.values():
            if task is not asyncio.current_task():
                task.cancel()
        self.spawn(self.update_registration(load=self._load()))
        self.log.info("session closed", extra=kv(session=session.session_id))

    def _load(self) -> float:
        return min(1.0, len(self.sessions) / FULL_LOAD_SESSIONS)

    async def _tick_loop(self) -> None:
        """Ticks each core when its :attr:`~TurnTaking.next_tick` comes; an event that brings
        a core's deadline closer wakes it early."""
        while True:
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if session.turns.next_tick <= now:
                    self._execute(session, session.turns.tick(now))
            soonest = (s.turns.next_tick for s in self.sessions.values())
            self._wake_at = min(soonest, default=now + 60.0)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(MIN_SLEEP_S, self._wake_at - time.monotonic())):
                    await self._wake.wait()

    # ------------------------------------------------------------------ the dialogue

    async def _reply(self, session: _Session, start: StartReply) -> None:
        """Run the dialogue adapter for turn ``start.turn``, feeding sentences to the core."""
        chunks: list[str] = []
        try:
            dialogue = self._dialogue(start.dialogue or self.settings.dialogue)
            cutter = SentenceBuffer()
            async for raw in dialogue.reply(start.history):
                chunk = without_controls(raw)  # a model's stray control bytes are not spoken
                chunks.append(chunk)
                for sentence in cutter.push(chunk):
                    self._feed(session, ReplySentence(start.turn, sentence))
            for sentence in cutter.flush():
                self._feed(session, ReplySentence(start.turn, sentence))
        except Exception as exc:  # the session must go on, whatever the adapter did
            code = exc.code if isinstance(exc, DialogueError | TextError) else "DIALOGUE_FAILED"
            message = f"{exc}"[:1000] or type(exc).__name__
            self.log.warning(
                "dialogue failed", extra=kv(session=session.session_id, code=code, error=message)
            )
            failed = ReplyFailed(start.turn, code, message, "".join(chunks).strip())
            self._feed(session, failed)
        else:
            self._feed(session, ReplyDone(start.turn, "".join(chunks).strip()))
        finally:
            session.replies.pop(start.turn, None)

    def _dialogue(self, name: str) -> Dialogue:
        if name not in self.dialogues:
            self.dialogues[name] = load_dialogue(name, self.settings.dialogue_openai)
        return self.dialogues[name]
