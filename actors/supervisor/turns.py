"""One session's turn-taking, pure: events in, commands out (docs/architecture.md, "Gateway ⇄
supervisor"). No I/O, no clock of its own: every call is given ``now`` (monotonic seconds), and
:attr:`TurnTaking.next_tick` says when the next :meth:`~TurnTaking.tick` is due.

- ``playout.event`` held (the gateway silenced the bot on VAD's ``speech_start``) while the bot
  is SPEAKING: the state is BARGED_IN and a window of ``barge_window_ms`` starts. The gateway
  is answered with ``control.barge_in_outcome`` unless a client stop, the utterance's end or
  the session's close comes first; a hold of any other utterance, or in any other state, at
  once with no words.
- Words (a partial or final transcript that is not the bot's own echo) while BARGED_IN: the
  outcome is words (the utterance ends ``barged_in``) and the turn is the person's. A partial
  of the same speech that came before the hold (it travels the event bus, the hold comes
  straight from the gateway) is weighed as soon as the hold arrives. A partial that is nearly
  echo (``echo_doubt`` of its trigrams, below ``echo_overlap``), or too short to have a
  trigram ("A"), waits for the next transcript: words again give the person the turn, echo
  or no words do not.
- No words (an empty final, an echo, or the window running out, once more if a partial was in
  doubt): the outcome is no words and playout resumes where it was held (a false
  interruption).
- A final transcript with words while SPEAKING or PAUSED with no hold (speech that began
  before the bot did): ``control.stop(barged_in)`` and the turn is the person's.
- A final transcript with words while LISTENING (or THINKING: the person added to their turn)
  is a user turn: the dialogue adapter streams a reply, sentence by sentence; the first starts
  the utterance (``playout.speak`` final=False), later ones are ``playout.text``, and an empty
  final ``playout.text`` closes it.
- A person who pauses mid-sentence (a comma) ends a turn in VAD's eyes. A reply never starts
  while they speak again: it waits until their latest speech has a final transcript (or
  five ``continuation_ms`` pass: that final may never come); their next words continue the
  turn (the reply in the making is dropped). If the reply had started and their next speech
  began within ``continuation_ms`` (stream time) of the end of their turn's speech, the reply
  is cut and both pieces are answered as one turn, the cut reply left out of the history.
- History holds what the person actually heard: the played part of each utterance, marked
  interrupted when it did not complete, and for the one they cut off, put before their turn
  that cut it. That is what the dialogue adapter sees.
- Texts queue as utterances and play one after another, before a reply that waits; more than
  ``MAX_QUEUED_UTTERANCES`` waiting are refused (``RATE_LIMITED``). The client's pause, resume
  and stop are already applied at the gateway: they only move the state (a stop also drops the
  queue and the reply in the making).

Echo: with speakers, the microphone hears the bot. A transcript arriving while the bot speaks,
or within ``echo_tail_ms`` after, made mostly (``echo_overlap`` of its letter trigrams) of the
bot's recent words is taken for echo, not for the person. Not handled: acoustic echo
cancellation (the client's job: browsers do it), and a person who repeats the bot's words
while it speaks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from actors.supervisor.commands import (
    CloseSession,
    Command,
    Count,
    Metric,
    ReplyDone,
    ReplyFailed,
    ReplySentence,
    Tell,
    TurnEvent,
)
from actors.supervisor.echo import BotSaid, echo_share, weighable, words
from actors.supervisor.history import History
from actors.supervisor.playlist import Playlist
from actors.supervisor.settings import SupervisorSettings
from actors.supervisor.state import Event, SessionMachine
from bus.audio_format import MIC
from bus.envelope import new_id
from bus.schema import Message
from bus.schema.asr import Transcript
from bus.schema.control import BargeInOutcome, Pause, Resume, Stop
from bus.schema.session import (
    PlayoutEvent,
    PlayoutEventKind,
    SessionClosed,
    SessionConfig,
    SessionOpened,
    SessionState,
    SessionText,
    StateChanged,
)
from bus.schema.tts import EndReason
from bus.schema.vad import SpeechEnd, SpeechStart

PATIENCE_CONTINUATIONS = 5
"""A reply waits at most this many ``continuation_ms`` for the person's final transcript."""

S = SessionState
_BOT_AUDIBLE = (S.SPEAKING, S.BARGED_IN, S.PAUSED)


@dataclass(slots=True)
class _Barge:
    """The utterance held by the person's speech, until words or no words decide."""

    uid: str
    deadline: float
    doubted: bool = False
    """A partial that was nearly echo: the next transcript decides."""
    extended: bool = False
    """The window was given once more because of a doubted partial."""


class TurnTaking:
    """One session's turn core; see the module docstring. :meth:`handle` and :meth:`tick`
    return the commands to execute, in order."""

    def __init__(
        self,
        session_id: str,
        settings: SupervisorSettings,
        now: float,
        new_id: Callable[[], str] = new_id,
    ) -> None:
        """A session opened at ``now``; ``new_id`` names its utterances."""
        self.settings = settings
        self._out: list[Command] = []
        self.machine = SessionMachine(session_id, on_refused=self._refused)
        self.machine.listeners.append(self._moved)
        patience_s = PATIENCE_CONTINUATIONS * settings.continuation_ms / 1000
        self.bot = Playlist(self.machine, self._out, new_id, patience_s)
        self.history = History()
        self.bot_said = BotSaid()
        self.opened_at = self.active_at = now
        self.voice = ""
        self.dialogue = ""
        self.barge: _Barge | None = None
        self.pending_user: list[str] = []
        """The person's words not yet answered."""
        self.quiet = True
        """False from the person's speech_start until the final transcript of that speech
        (words or not); a late final of an earlier speech does not count."""
        self.speech_from_sample = -1
        """Where the person's latest speech began, with its pre-roll (stream samples)."""
        self.speech_start_sample = -1
        self.speech_end_sample = -1
        self.turn_end_sample = -1
        """Where the speech of the person's last turn ended."""
        self.continuing = ""
        """A reply cut because the person went on with their turn: left out of the history."""
        self.merge_next = False
        """The person's next turn continues their last one: answer both as one."""
        self.before_hold: Transcript | None = None
        """The latest partial of the person's current speech heard while the bot spoke and
        before the gateway's hold reached us (VAD and ASR events come through the event bus,
        the hold straight from the gateway: either may come first)."""

    @property
    def state(self) -> SessionState:
        return self.machine.state

    # ------------------------------------------------------------------ entry points

    def handle(self, event: TurnEvent, now: float) -> list[Command]:
        """Apply ``event``, which happened at ``now``."""
        if self.state is S.ENDED:
            return []
        if not isinstance(event, ReplySentence | ReplyDone | ReplyFailed):
            self.active_at = now  # a sign of the person, or of the bot speaking to them
        match event:
            case SessionOpened():
                self.machine.fire(Event.OPENED)
            case SessionConfig():
                self.voice, self.dialogue = event.voice, event.dialogue
            case SessionText():
                self.bot.queue_text(event.text, event.voice or self.voice)
            case Pause():
                self.machine.fire(Event.PAUSE)
            case Resume():
                self.machine.fire(Event.RESUME)
            case Stop():  # the gateway has stopped playout already
                self.barge = None
                self.bot.drop()
                self.machine.fire(Event.STOP)
            case SessionClosed():
                self._close("")
            case PlayoutEvent():
                self._playout(event, now)
            case SpeechStart():
                self.quiet = False
                self.before_hold = None
                self.speech_start_sample = event.stream_sample
                self.speech_from_sample = event.preroll_sample
            case SpeechEnd():
                self.speech_end_sample = event.stream_sample
            case Transcript():
                self._transcript(event, now)
            case ReplySentence():
                self.bot.sentence(event, now)
            case ReplyDone() | ReplyFailed():
                self.bot.reply_over(event)
        return self._flush(now)

    def tick(self, now: float) -> list[Command]:
        """Let time pass to ``now``: barge windows, the reply's patience, session expiry."""
        if self.state is S.ENDED:
            return []
        if now - self.opened_at >= self.settings.max_duration_s:
            self._close("max_duration")
        elif not self.bot.utterance and now - self.active_at >= self.settings.idle_timeout_s:
            self._close("idle_timeout")
        else:
            barge = self.barge
            if barge is not None and now >= barge.deadline:
                if barge.doubted and not barge.extended:
                    barge.deadline += self.settings.barge_window_ms / 1000
                    barge.extended = True
                else:
                    self._resume()
            self.bot.tick(now)
        return self._flush(now)

    @property
    def next_tick(self) -> float:
        """When :meth:`tick` must next be called (monotonic seconds)."""
        due = [self.opened_at + self.settings.max_duration_s]
        if not self.bot.utterance:
            due.append(self.active_at + self.settings.idle_timeout_s)
        if self.barge is not None:
            due.append(self.barge.deadline)
        reply = self.bot.deadline()
        if reply is not None:
            due.append(reply)
        return min(due)

    # ------------------------------------------------------------------ the person

    def _transcript(self, msg: Transcript, now: float) -> None:
        if msg.final and msg.start_sample >= self.speech_from_sample:
            self.quiet = True  # under load, a speech's final can come after the next began
        said = bool(words(msg.text))
        share = self._echo_share(msg.text, now) if said else 0.0
        has_words = said and share < self.settings.echo_overlap
        if self.state is S.BARGED_IN and self.barge is not None:
            # An early partial of the bot's own echo can be misheard ("a like house" for "a
            # lighthouse") or too short to weigh ("A"): one that is nearly echo, or has no
            # letter trigram to compare, waits for the next transcript to decide.
            doubted = (
                has_words
                and not msg.final
                and (share >= self.settings.echo_doubt or not weighable(msg.text))
            )
            if has_words and not (doubted and not self.barge.doubted):
                self._give_floor()
            elif msg.final:
                self._resume()  # a cough, noise or echo
            else:
                self.barge.doubted = doubted
            if not (has_words and msg.final):
                return
        elif self.state in (S.SPEAKING, S.PAUSED) and has_words and msg.final:
            self._give_floor()  # speech that began before the bot did: no hold came
        elif self.state is S.SPEAKING and said and msg.start_sample >= self.speech_from_sample:
            self.before_hold = msg  # the hold for this speech may still be on its way
        if not msg.final or not has_words:
            return
        self.pending_user.append(msg.text.strip())
        if self.state in (S.LISTENING, S.THINKING):
            self._user_turn()

    def _echo_share(self, text: str, now: float) -> float:
        """:func:`echo_share` against what the bot says now or said within ``echo_tail_ms``."""
        recent = self.bot_said.within(now, self.settings.echo_tail_ms / 1000)
        if self.state in _BOT_AUDIBLE:
            recent.append(self.bot.text)
        share = echo_share(text, recent)
        if share >= self.settings.echo_overlap:
            self._out.append(Count(Metric.ECHO_IGNORED))
        return share

    def _user_turn(self) -> None:
        text = " ".join(self.pending_user)
        self.pending_user.clear()
        thinking = self.state is S.THINKING and self.bot.reply is not None
        self.history.said(text, continues=thinking or self.merge_next)  # answer all of it
        self.merge_next = False
        self.turn_end_sample = self.speech_end_sample
        self.machine.fire(Event.USER_TURN)
        self._out.append(Count(Metric.USER_TURN))
        self.bot.start_reply(self.dialogue, self.history.turns())

    # ------------------------------------------------------------------ barge-in

    def _held(self, uid: str, now: float) -> None:
        if uid != self.bot.utterance or self.state is not S.SPEAKING:
            self._tell(BargeInOutcome(utterance_id=uid, words=False))  # nothing to decide
            return
        self.machine.fire(Event.SPEECH_START)
        self.barge = _Barge(uid, now + self.settings.barge_window_ms / 1000)
        self._out.append(Count(Metric.BARGE_IN))
        early, self.before_hold = self.before_hold, None
        if early is not None:
            self._transcript(early, now)

    def _resume(self) -> None:
        barge, self.barge = self.barge, None
        if barge is None:
            return
        self._tell(BargeInOutcome(utterance_id=barge.uid, words=False))
        if self.machine.fire(Event.NO_WORDS):
            self._out.append(Count(Metric.FALSE_INTERRUPTION))

    def _give_floor(self) -> None:
        """Cut the bot's utterance (and drop the queue and any reply in the making)."""
        uid, held = self.bot.utterance, self.barge is not None
        went_on = self.speech_start_sample - self.turn_end_sample  # stream time: load-proof
        continuation = MIC.samples(self.settings.continuation_ms)
        if uid and uid == self.bot.reply_uid and 0 <= went_on < continuation:
            self.continuing, self.merge_next = uid, True
        self.barge = None
        self.bot.drop()
        if self.machine.fire(Event.WORDS if held else Event.STOP) and uid:
            self.history.cut(uid)
            if held:
                self._tell(BargeInOutcome(utterance_id=uid, words=True))
            else:
                self._tell(Stop(utterance_id=uid, reason=EndReason.BARGED_IN))

    # ------------------------------------------------------------------ playout

    def _playout(self, msg: PlayoutEvent, now: float) -> None:
        uid = msg.utterance_id
        if msg.event is PlayoutEventKind.HELD:
            self._held(uid, now)
        if msg.event is not PlayoutEventKind.ENDED or uid != self.bot.utterance:
            return
        self.bot_said.ended(now, self.bot.ended())
        if self.barge is not None and self.barge.uid == uid:
            self.barge = None  # it ended otherwise (an error): nothing left to decide
        if uid == self.continuing:
            self.continuing = ""  # cut so the person could finish their turn: not history
        else:
            self.history.heard(uid, msg.heard, msg.reason)
        if self.state in (S.BARGED_IN, S.PAUSED) or (
            self.state is S.SPEAKING and not self.bot.queue
        ):
            self.machine.fire(Event.DONE)

    # ------------------------------------------------------------------ plumbing

    def _close(self, reason: str) -> None:
        """Reason empty: the gateway closed it; else tell the gateway."""
        self.barge = None
        self.bot.drop()
        self.machine.fire(Event.CLOSED)
        if reason:
            self._out.append(CloseSession(reason))

    def _tell(self, message: Message) -> None:
        self._out.append(Tell(message))

    def _moved(self, old: SessionState, new: SessionState, _event: Event) -> None:
        if new is not old:  # THINKING → THINKING (a turn grew) is no news for the client
            self._tell(StateChanged(state=new))

    def _refused(self) -> None:
        self._out.append(Count(Metric.REFUSED_TRANSITION))

    def _flush(self, now: float) -> list[Command]:
        if self.state is not S.ENDED:
            self.bot.next(
                now, quiet=self.quiet, voice=self.voice, answers_sample=self.speech_end_sample
            )
        out = list(self._out)
        self._out.clear()  # the playlist appends to this same list
        return out
