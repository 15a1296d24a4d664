"""The session supervisor: owns every session's state and decides what is spoken when.

Consumes on its inbox, from gateways: ``session.opened``, ``session.config``,
``session.text``, ``control.pause`` / ``control.resume`` / ``control.stop``, ``playout.event``,
``session.closed``; on the event bus: ``vad.*`` and ``asr.transcript``.
Emits: ``session.state`` on every transition (to the gateway, and published on
``session.state.<session>`` for VAD), ``playout.speak`` / ``playout.text`` (after asking the
router for a worker), ``control.barge_in`` / ``control.*``, ``session.event`` (``reply``),
``error`` and ``session.closed`` (idle timeout, maximum duration) to the session's gateway;
``control.*`` to the worker speaking for the session.

Texts queue as utterances and play in order; spoken turns, replies and barge-in are
:mod:`actors.conversation`. The state machine itself lives in :mod:`actors.session_state`;
this actor only wires them to the bus.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from dataclasses import dataclass, field

from prometheus_client import Counter

from actors.conversation import Conversation, Talk
from actors.session_state import Event, SessionMachine, State
from bus import topics
from bus.errors import BusError, RemoteError
from bus.inbound import Inbound
from bus.logs import kv
from bus.runtime import Actor
from bus.schema import Message
from bus.schema.asr import Transcript
from bus.schema.control import Pause, Resume, Stop
from bus.schema.routing import RouteAssignment, RouteRelease, RouteRequest
from bus.schema.session import (
    PlayoutEvent,
    PlayoutSpeak,
    SessionClosed,
    SessionConfig,
    SessionOpened,
    SessionText,
    StateChanged,
)
from bus.schema.system import Error
from bus.schema.vad import SpeechEnd, SpeechStart
from bus.topology import ActorConfig

MAX_QUEUED_UTTERANCES = 32
"""Texts a session may have waiting; more are refused with ``RATE_LIMITED``."""


@dataclass(slots=True)
class Session:
    """What the supervisor keeps per session."""

    session_id: str
    gateway: str
    machine: SessionMachine
    queue: deque[tuple[str, str]] = field(default_factory=deque)
    """(text, voice) waiting to be spoken."""
    utterance_id: str = ""
    """The utterance playing (or being routed), if any."""
    worker_id: str = ""
    routing: bool = False
    """A task is asking the router for the next utterance's worker."""
    opened: float = field(default_factory=time.monotonic)
    active: float = field(default_factory=time.monotonic)
    """Last sign of the person or of speech."""
    voice: str = ""
    """The client's chosen voice (replies use it)."""
    talk: Talk = field(default_factory=Talk)


class Supervisor(Actor):
    """Runs sessions; see the module docstring."""

    def __init__(self, config: ActorConfig) -> None:
        super().__init__(config)
        self.idle_timeout_s = float(config.settings.get("idle_timeout_s", 300))
        self.max_duration_s = float(config.settings.get("max_duration_s", 3600))
        self.busy_wait_s = float(config.settings.get("busy_wait_ms", 5000)) / 1000
        self.sessions: dict[str, Session] = {}
        self.refused = Counter(
            "duplex_session_transitions_refused_total",
            "Session events that made no sense in the session's state (logged, then ignored)",
            registry=self.metrics.registry,
        )
        self.busy_waits = Counter(
            "duplex_route_busy_waits_total",
            "Times a route found every fitting TTS worker saturated and asked again",
            registry=self.metrics.registry,
        )
        self.talk = Conversation(self)
        self.subscribe(topics.VAD)
        self.subscribe(topics.ASR)

    async def on_start(self) -> None:
        self.spawn(self._expire_loop())

    async def on_stop(self) -> None:
        await self.talk.close()

    async def on_message(self, inbound: Inbound) -> None:
        msg, sid = inbound.message, inbound.env.session
        if isinstance(msg, SessionOpened):
            await self._open(sid, msg.gateway or inbound.env.src)
            return
        session = self.sessions.get(sid)
        if session is None:
            if not isinstance(
                msg, SessionClosed | PlayoutEvent | SpeechStart | SpeechEnd | Transcript
            ):
                await self.reply(inbound, Error(code="UNKNOWN_SESSION", message=sid))
            return
        if isinstance(msg, SpeechStart):
            self.talk.speech_start(session, msg)
        elif isinstance(msg, SpeechEnd):
            self.talk.speech_end(session, msg)
        elif isinstance(msg, Transcript):
            self.talk.transcript(session, msg)
        elif isinstance(msg, SessionConfig):
            session.voice, session.talk.dialogue = msg.voice, msg.dialogue
        elif isinstance(msg, SessionText):
            await self._text(session, msg)
        elif isinstance(msg, Pause | Resume | Stop):
            await self._control(session, msg)
        elif isinstance(msg, PlayoutEvent):
            await self._playout(session, msg)
        elif isinstance(msg, SessionClosed):
            await self._close(session, msg.reason, tell_gateway=False)
        else:
            await super().on_message(inbound)

    # ------------------------------------------------------------------ sessions

    async def _open(self, sid: str, gateway: str) -> None:
        if sid in self.sessions:
            return
        machine = SessionMachine(sid, on_refused=self.refused.inc)
        session = self.sessions[sid] = Session(sid, gateway, machine)
        machine.listeners.append(lambda old, new, _event: self._state_changed(session, old, new))
        machine.fire(Event.OPENED)
        await self.update_registration(load=min(1.0, len(self.sessions) / 1000))

    def _state_changed(self, session: Session, old: State, new: State) -> None:
        changed = StateChanged(state=new.value, previous=old.value)
        self.tell(session, changed)
        topic = topics.topic(topics.STATE, session.session_id)
        self.spawn(self.publish(topic, changed, session=session.session_id))

    async def _close(self, session: Session, reason: str, tell_gateway: bool) -> None:
        self.sessions.pop(session.session_id, None)
        for task in (session.talk.reply_task, session.talk.barge_task):
            if task is not None:
                task.cancel()
        if session.worker_id and session.utterance_id:
            self.to_worker(session, Stop(utterance_id=session.utterance_id))
        session.machine.fire(Event.CLOSED)
        if tell_gateway:
            self.tell(session, SessionClosed(reason=reason))
        routers = self.registry.alive("router")
        if routers:
            self.send_or_warn(routers[0].actor_id, RouteRelease(), session.session_id)
        self.log.info("session closed", extra=kv(session=session.session_id, reason=reason))

    async def _text(self, session: Session, msg: SessionText) -> None:
        session.active = time.monotonic()
        if len(session.queue) >= MAX_QUEUED_UTTERANCES:
            queued = f"{MAX_QUEUED_UTTERANCES} texts already queued"
            self.tell(session, Error(code="RATE_LIMITED", message=queued))
            return
        session.queue.append((msg.text, msg.voice))
        self._kick(session)

    def _kick(self, session: Session) -> None:
        """Start the next queued utterance unless one plays or is being routed. Routing waits
        for the router's reply, so it runs in a task, never in the handler itself."""
        if not session.utterance_id and not session.routing and session.queue:
            session.routing = True
            self.spawn(self._speak_next(session))

    async def _speak_next(self, session: Session) -> None:
        try:
            await self._route_next(session)
        finally:
            session.routing = False

    async def _route_next(self, session: Session) -> None:
        while session.queue and not session.utterance_id:
            text, voice = session.queue.popleft()
            assignment = await self.route(session, voice)
            if assignment is None or session.session_id not in self.sessions:
                continue
            session.utterance_id = os.urandom(6).hex()
            session.worker_id = assignment.worker_id
            session.talk.speaking_text = text
            session.machine.fire(Event.SPEAK)
            self.tell(
                session,
                PlayoutSpeak(
                    utterance_id=session.utterance_id,
                    text=text,
                    worker_id=assignment.worker_id,
                    voice=assignment.voice,
                ),
            )
        if not session.utterance_id and session.machine.state is State.SPEAKING:
            session.machine.fire(Event.DONE)

    async def route(self, session: Session, voice: str) -> RouteAssignment | None:
        """Ask the router for a worker (from a task: this waits for the reply); None after
        telling the client why not. While every worker that could speak is saturated (``BUSY``)
        it asks again, for ``busy_wait_ms`` at most: a reply a little late beats none."""
        deadline = time.monotonic() + self.busy_wait_s
        while session.session_id in self.sessions:
            routers = self.registry.alive("router")
            if not routers:
                self.tell(session, Error(code="NO_WORKER", message="no router is running"))
                return None
            try:
                reply = await self.request(
                    routers[0].actor_id,
                    RouteRequest(voice=voice),
                    session=session.session_id,
                    timeout=2.0,
                )
            except RemoteError as exc:
                if exc.code == "BUSY" and time.monotonic() < deadline:
                    self.busy_waits.inc()
                    await asyncio.sleep(0.1)
                    continue
                self.tell(session, Error(code=exc.code, message=exc.message))
                return None
            except BusError as exc:
                self.tell(session, Error(code="NO_WORKER", message=str(exc)))
                return None
            return reply if isinstance(reply, RouteAssignment) else None
        return None  # the session ended while it waited

    async def _playout(self, session: Session, msg: PlayoutEvent) -> None:
        session.active = time.monotonic()
        if msg.event != "ended" or msg.utterance_id != session.utterance_id:
            return
        session.utterance_id = ""
        self.talk.utterance_ended(session, msg.utterance_id, msg.heard, msg.reason)
        if session.machine.state is State.BARGED_IN:
            session.machine.fire(Event.DONE)
        if session.machine.state is State.PAUSED:
            session.machine.fire(Event.DONE)
        if session.queue:
            self._kick(session)
        elif session.machine.state is State.SPEAKING:
            session.machine.fire(Event.DONE)

    async def _control(self, session: Session, msg: Pause | Resume | Stop) -> None:
        session.active = time.monotonic()
        if isinstance(msg, Pause):
            moved = session.machine.fire(Event.PAUSE)
        elif isinstance(msg, Resume):
            moved = session.machine.fire(Event.RESUME)
        else:
            session.queue.clear()
            self.talk.cancel_reply(session)
            moved = session.machine.fire(Event.STOP)
        if moved and session.utterance_id:
            control = type(msg)(utterance_id=session.utterance_id)
            self.to_worker(session, control)
            if not isinstance(msg, Stop):
                self.tell(session, control)  # the gateway's playout follows too

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.idle_timeout_s / 4))
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if now - session.opened > self.max_duration_s:
                    await self._close(session, "max_duration", tell_gateway=True)
                elif now - session.active > self.idle_timeout_s and not session.utterance_id:
                    await self._close(session, "idle_timeout", tell_gateway=True)

    # ------------------------------------------------------------------ sending

    def tell(self, session: Session, msg: Message) -> None:
        """To the session's gateway, in order with everything else sent there."""
        try:
            self.send_nowait(session.gateway, msg, session=session.session_id)
        except BusError as exc:
            self.log.warning(
                "gateway unreachable", extra=kv(session=session.session_id, error=str(exc))
            )

    def to_worker(self, session: Session, msg: Message) -> None:
        if session.worker_id:
            self.send_or_warn(session.worker_id, msg, session.session_id)
