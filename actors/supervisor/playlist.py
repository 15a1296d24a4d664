"""The bot's side of one session's turn-taking: the texts queued, the reply to the person's
turn paced sentence by sentence, and the utterance playing. :mod:`actors.supervisor.turns`
decides when the person has the floor; this decides what plays next when they do not.

Pure, like the core: it fires the core's state machine and appends to the core's commands.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from actors.supervisor.commands import (
    CancelReply,
    Command,
    Count,
    Metric,
    ReplyDone,
    ReplyFailed,
    ReplySentence,
    StartReply,
    Tell,
)
from actors.supervisor.state import Event, SessionMachine
from adapters.dialogue import Turn
from adapters.dialogue.base import MAX_REPLY_CHARS
from bus.schema import Message
from bus.schema.session import PlayoutSpeak, PlayoutText, SessionReply, SessionState
from bus.schema.system import Error

MAX_QUEUED_UTTERANCES = 32
"""Texts a session may have waiting; more are refused with ``RATE_LIMITED``."""
STUCK_S = 60.0
"""A reply waiting this long for the utterance before it to end gives up."""


@dataclass(slots=True)
class _Reply:
    """The dialogue's reply to one turn, from its start until it is spoken and closed."""

    turn: int
    waiting: list[str] = field(default_factory=list)
    """Sentences that came before its utterance could start."""
    since: float = 0.0
    """When its first sentence came (monotonic seconds)."""
    uid: str = ""
    """Its utterance, once started."""
    done: bool = False
    """The adapter finished (or failed): nothing more will come."""
    text: str = ""


class Playlist:
    """What the bot says in one session, one utterance at a time."""

    def __init__(
        self,
        machine: SessionMachine,
        out: list[Command],
        new_id: Callable[[], str],
        patience_s: float,
    ) -> None:
        self._machine, self._out, self._new_id = machine, out, new_id
        self._patience_s = patience_s
        """How long a reply waits for the person's final transcript."""
        self.queue: deque[tuple[str, str]] = deque()
        """(text, voice) waiting to be spoken."""
        self.utterance = ""
        """The utterance playing, from ``playout.speak`` until its ``ended``."""
        self.text = ""
        """The text of that utterance (it grows while a reply streams)."""
        self.reply: _Reply | None = None
        self.reply_uid = ""
        """The utterance answering the person's last turn."""
        self.turns = 0
        """Replies started: each is known by this number."""

    def queue_text(self, text: str, voice: str) -> None:
        if len(self.queue) >= MAX_QUEUED_UTTERANCES:
            queued = f"{MAX_QUEUED_UTTERANCES} texts already queued"
            self._tell(Error(code="RATE_LIMITED", message=queued))
            return
        self.queue.append((text, voice))

    def start_reply(self, dialogue: str, history: tuple[Turn, ...]) -> None:
        self.cancel_reply()
        self.turns += 1
        self.reply = _Reply(self.turns)
        self._out.append(StartReply(self.turns, dialogue, history))

    def cancel_reply(self) -> None:
        if self.reply is not None and not self.reply.done:
            self._out.append(CancelReply(self.reply.turn))
        self.reply = None

    def drop(self) -> None:
        """Nothing queued or in the making is said any more (the utterance playing is the
        caller's to cut)."""
        self.queue.clear()
        self.cancel_reply()

    def sentence(self, event: ReplySentence, now: float) -> None:
        reply = self.reply
        if reply is None or reply.turn != event.turn:
            return  # a reply dropped since
        if not reply.uid:
            if not reply.waiting:
                reply.since = now
            reply.waiting.append(event.text)
        elif reply.uid == self.utterance:
            self.text = f"{self.text} {event.text}"
            self._tell(PlayoutText(utterance_id=reply.uid, text=f"{event.text} "))

    def reply_over(self, event: ReplyDone | ReplyFailed) -> None:
        reply = self.reply
        if reply is None or reply.turn != event.turn:
            return
        reply.done, reply.text = True, event.text
        if isinstance(event, ReplyFailed):  # what it said before failing is still spoken
            self._error(event.code, event.message)

    def ended(self) -> str:
        """The utterance playing is over; its text."""
        text, self.utterance, self.text = self.text, "", ""
        return text

    def tick(self, now: float) -> None:
        reply = self.reply
        if reply and reply.waiting and self.utterance and now >= reply.since + STUCK_S:
            if not reply.done:
                self._out.append(CancelReply(reply.turn))
            reply.done = True
            reply.waiting.clear()  # what it said reaches the client as text only
            self._error("DIALOGUE_FAILED", "the previous utterance never ended")

    def deadline(self) -> float | None:
        """When :meth:`tick` or :meth:`next` has something to do; None: only on events."""
        reply = self.reply
        if reply is None or not reply.waiting:
            return None
        return reply.since + (STUCK_S if self.utterance else self._patience_s)

    def next(self, now: float, *, quiet: bool, voice: str, answers_sample: int) -> None:
        """Start what may play now: the next queued text, else the reply once the person is
        ``quiet`` (or out of patience); close a reply that is over."""
        if not self.utterance and self.queue:
            text, text_voice = self.queue.popleft()
            self._speak(PlayoutSpeak(utterance_id=self._new_id(), text=text, voice=text_voice))
        reply = self.reply
        if reply is None:
            return
        patient = not quiet and now < reply.since + self._patience_s
        if reply.waiting and not reply.uid and not self.utterance and not patient:
            first, *more = reply.waiting
            reply.waiting.clear()
            reply.uid = self.reply_uid = self._new_id()
            speak = PlayoutSpeak(
                utterance_id=reply.uid,
                text=f"{first} ",  # the space ends the sentence for the worker: speak it now
                voice=voice,
                final=False,
                answers_sample=answers_sample,
            )
            self._speak(speak, first)
            for sentence in more:
                self.sentence(ReplySentence(reply.turn, sentence), now)
        if reply.done and not reply.waiting:
            if reply.uid and reply.uid == self.utterance:
                self._tell(PlayoutText(utterance_id=reply.uid, text="", final=True))
            if reply.text:
                self._tell(SessionReply(text=reply.text[:MAX_REPLY_CHARS]))
            self.reply = None
            if not reply.uid and self._machine.state is SessionState.THINKING:
                self._machine.fire(Event.NOTHING_TO_SAY)

    def _speak(self, speak: PlayoutSpeak, text: str = "") -> None:
        self.utterance, self.text = speak.utterance_id, text or speak.text
        self._machine.fire(Event.SPEAK)
        self._tell(speak)

    def _error(self, code: str, message: str) -> None:
        self._tell(Error(code=code, message=message))
        self._out.append(Count(Metric.DIALOGUE_ERROR, code))

    def _tell(self, message: Message) -> None:
        self._out.append(Tell(message))
