"""Turn-taking for the supervisor: the person's speech, their transcripts, the bot's replies and
barge-in (DESIGN.md, "Barge-in, as the user experiences it").

- ``vad.speech_start`` while the bot is SPEAKING: the gateway holds playout (silent from the next
  frame, its unplayed lead taken back), the worker pauses, the client gets ``barge_in``, the
  state is BARGED_IN, and a window of ``barge_window_ms`` starts.
- Words (a partial or final transcript that is not the bot's own echo) while BARGED_IN: the
  utterance is stopped with reason ``barged_in`` and the turn is the person's. A partial that
  is nearly echo (``echo_doubt`` of its trigrams, below ``echo_overlap``) waits for the next
  transcript: words again stop the bot, echo or no words do not.
- No words (an empty final, an echo, or the window running out): playout resumes where it was
  held (a false interruption).
- A final transcript with words while LISTENING (or THINKING: the person added to their turn)
  is a user turn: the dialogue adapter streams a reply, cut into sentences as it arrives; the
  first sentence starts the utterance and later ones are appended to it.
- A person who pauses mid-sentence (a comma) ends a turn in VAD's eyes. A reply never starts
  while they speak again; their next words continue the turn (the reply in the making is
  dropped). If the reply had started and their next speech began within ``continuation_ms``
  (stream time) of the end of their turn's speech, the reply is cut (barge-in) and both pieces
  are answered as one turn, the cut reply left out of the history.
- History holds what the person actually heard: the played part of each reply, marked
  interrupted when they cut it off. That is what the dialogue adapter sees.

Echo: with speakers, the microphone hears the bot. VAD's stricter thresholds while SPEAKING make
echo work harder to interrupt; a transcript arriving while the bot speaks, or within
``echo_tail_ms`` after, made mostly (``echo_overlap`` of its letter trigrams) of the bot's recent
words is taken for echo, not for the person. Not handled: acoustic echo cancellation (the
client's job: browsers do it), and a person who repeats the bot's words while it speaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import Counter

from actors.session_state import Event, State
from adapters.dialogue import Dialogue, DialogueError, Turn, load_dialogue
from adapters.tts.text import SentenceBuffer, TextError
from bus.logs import kv
from bus.schema.asr import Transcript
from bus.schema.control import BargeIn, Pause, Resume, Stop
from bus.schema.session import PlayoutSpeak, PlayoutText, SessionEvent
from bus.schema.system import Error
from bus.schema.vad import SpeechEnd, SpeechStart

if TYPE_CHECKING:
    from actors.supervisor import Session, Supervisor

MAX_HISTORY = 40
"""Turns kept per session (oldest dropped)."""
MAX_TURN_CHARS = 4000
"""A person's turn is cut here (turns that continue each other are joined)."""
_WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _trigrams(text: str) -> set[str]:
    letters = "".join(words(text))
    return {letters[i : i + 3] for i in range(len(letters) - 2)}


def echo_share(transcript: str, bot_said: Sequence[str]) -> float:
    """How much of ``transcript`` is what the bot just said: the share of its letter trigrams
    (spaces ignored, so "light house" matches "lighthouse") found in the bot's text."""
    heard = _trigrams(transcript)
    said = set().union(*(_trigrams(text) for text in bot_said)) if bot_said else set()
    if not heard or not said:
        return 0.0
    return len(heard & said) / len(heard)


def is_echo(transcript: str, bot_said: Sequence[str], overlap: float = 0.6) -> bool:
    """True when at least ``overlap`` of ``transcript`` is the bot's text (:func:`echo_share`)."""
    return echo_share(transcript, bot_said) >= overlap


@dataclass(slots=True)
class Talk:
    """A session's conversation state (part of the supervisor's :class:`Session`)."""

    dialogue: str = "echo"
    history: deque[Turn] = field(default_factory=lambda: deque(maxlen=MAX_HISTORY))
    bot_said: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=8))
    """(when it stopped playing, text) of recent utterances, for echo."""
    speaking_text: str = ""
    """Text of the utterance playing now (grows while a reply streams)."""
    barged: str = ""
    """The utterance held by a barge-in, until words or no words decide."""
    barge_task: asyncio.Task[None] | None = None
    cut: tuple[str, int] = ("", 0)
    """The utterance the person cut off, and where in the history its heard part belongs
    (before their turn, which can be taken before its end comes back from the gateway)."""
    doubted: bool = False
    """A partial while BARGED_IN that was nearly echo: the next transcript decides."""
    reply_task: asyncio.Task[None] | None = None
    speech_from_sample: int = -1
    """Where the person's latest speech began, with its pre-roll (stream samples)."""
    speech_start_sample: int = -1
    """Where the person's latest speech began (stream samples)."""
    speech_end_sample: int = -1
    """Where the person's last speech ended (the turn a reply answers)."""
    pending_user: list[str] = field(default_factory=list)
    """User words not yet answered (a turn that came while the bot was still thinking)."""
    reply_uid: str = ""
    """The utterance answering the person's last turn."""
    turn_end_sample: int = -1
    """Where the speech of the person's last turn ended (stream samples)."""
    continuing: str = ""
    """A reply cut because the person went on with their turn: left out of the history."""
    merge_next: bool = False
    """The person's next turn continues their last one: answer both as one."""
    quiet: asyncio.Event = field(default_factory=asyncio.Event)
    """Clear from the person's speech_start until the final transcript of that speech (words
    or not); a late final of an earlier speech does not set it."""

    def __post_init__(self) -> None:
        self.quiet.set()


class Conversation:
    """The supervisor's turn-taking; see the module docstring."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.sv = supervisor
        settings = supervisor.config.settings
        self.default_dialogue = str(settings.get("dialogue", "echo"))
        self.dialogue_settings = dict(settings.get("dialogue_openai", {}) or {})
        self.barge_window_s = float(settings.get("barge_window_ms", 1200)) / 1000
        self.echo_tail_s = float(settings.get("echo_tail_ms", 1500)) / 1000
        self.echo_overlap = float(settings.get("echo_overlap", 0.6))
        self.echo_doubt = float(settings.get("echo_doubt", 0.3))
        self.continuation_s = float(settings.get("continuation_ms", 2000)) / 1000
        self.continuation_samples = round(self.continuation_s * 16_000)  # stream time
        self.dialogues: dict[str, Dialogue] = {}
        registry = supervisor.metrics.registry
        self.barge_ins = Counter(
            "duplex_barge_ins_total", "Barge-ins (speech over the bot)", registry=registry
        )
        self.false_interruptions = Counter(
            "duplex_false_interruptions_total",
            "Barge-ins that held no words: playout resumed",
            registry=registry,
        )
        self.echoes = Counter(
            "duplex_echo_transcripts_total",
            "Transcripts taken for the bot's own voice",
            registry=registry,
        )
        self.turns = Counter("duplex_user_turns_total", "User turns answered", registry=registry)
        self.dialogue_errors = Counter(
            "duplex_dialogue_errors_total", "Dialogue failures", ["code"], registry=registry
        )

    async def close(self) -> None:
        for dialogue in self.dialogues.values():
            await dialogue.close()

    # ------------------------------------------------------------------ the person

    def speech_start(self, session: Session, msg: SpeechStart) -> None:
        session.active = time.monotonic()
        talk = session.talk
        talk.quiet.clear()
        talk.speech_start_sample, talk.speech_from_sample = msg.stream_sample, msg.preroll_sample
        if session.machine.state is not State.SPEAKING or not session.utterance_id:
            return
        uid = session.utterance_id
        session.machine.fire(Event.SPEECH_START)
        session.talk.barged, session.talk.doubted = uid, False
        self.barge_ins.inc()
        self.sv.tell(session, BargeIn(utterance_id=uid, stream_sample=msg.stream_sample))
        self.sv.to_worker(session, Pause(utterance_id=uid))
        session.talk.barge_task = self.sv.spawn(self._barge_window(session, uid))
        self.sv.log.info("barge-in", extra=kv(session=session.session_id, utterance=uid))

    def speech_end(self, session: Session, msg: SpeechEnd) -> None:
        session.active = time.monotonic()
        session.talk.speech_end_sample = msg.stream_sample

    def transcript(self, session: Session, msg: Transcript) -> None:
        session.active = time.monotonic()
        talk = session.talk
        if msg.final and msg.start_sample >= talk.speech_from_sample:
            talk.quiet.set()  # the person's latest speech is transcribed (under load, the
            # final of a speech can come after they began the next one)
        state = session.machine.state
        share = self._echo_share(session, msg.text) if words(msg.text) else 0.0
        has_words = bool(words(msg.text)) and share < self.echo_overlap
        if state is State.BARGED_IN:
            # An early partial of the bot's own echo can be misheard ("a like house" for "a
            # lighthouse"): one that is nearly echo waits for the next transcript to decide.
            doubted = has_words and not msg.final and share >= self.echo_doubt
            if has_words and not (doubted and not talk.doubted):
                self._give_floor(session)
            elif msg.final:
                self._resume(session)  # a cough, noise or echo
            talk.doubted = doubted
            if not (has_words and msg.final):
                return
        elif state in (State.SPEAKING, State.PAUSED) and has_words and msg.final:
            self._give_floor(session)  # speech that began before the bot did
        if not msg.final or not has_words:
            return
        talk.pending_user.append(msg.text.strip())
        if session.machine.state in (State.LISTENING, State.THINKING):
            self._user_turn(session)

    def _echo_share(self, session: Session, text: str) -> float:
        """:func:`echo_share` against what the bot says now or said within ``echo_tail_ms``;
        counts and logs the transcripts taken for echo."""
        talk, now = session.talk, time.monotonic()
        recent = [t for ended, t in talk.bot_said if now - ended < self.echo_tail_s]
        if session.machine.state in (State.SPEAKING, State.BARGED_IN, State.PAUSED):
            recent.append(talk.speaking_text)
        share = echo_share(text, recent)
        if share >= self.echo_overlap:
            self.echoes.inc()
            self.sv.log.info("echo ignored", extra=kv(session=session.session_id, text=text[:80]))
        return share

    # ------------------------------------------------------------------ barge-in outcomes

    async def _barge_window(self, session: Session, uid: str) -> None:
        await asyncio.sleep(self.barge_window_s)
        if session.talk.doubted:  # the next transcript decides: give it one more window
            await asyncio.sleep(self.barge_window_s)
        if session.talk.barged == uid and session.machine.state is State.BARGED_IN:
            self._resume(session)

    def _resume(self, session: Session) -> None:
        uid, session.talk.barged = session.talk.barged, ""
        self._cancel(session.talk.barge_task)
        if session.machine.fire(Event.NO_WORDS) and uid == session.utterance_id:
            self.false_interruptions.inc()
            self.sv.to_worker(session, Resume(utterance_id=uid))
            self.sv.tell(session, Resume(utterance_id=uid))

    def _give_floor(self, session: Session) -> None:
        """Stop and discard the bot's utterance (and any reply still streaming)."""
        talk, uid = session.talk, session.utterance_id
        talk.barged = ""
        went_on = talk.speech_start_sample - talk.turn_end_sample  # stream time: load-proof
        if uid and uid == talk.reply_uid and 0 <= went_on < self.continuation_samples:
            talk.continuing, talk.merge_next = uid, True
        self._cancel(talk.barge_task)
        self._cancel(talk.reply_task)
        session.queue.clear()
        moved = session.machine.fire(
            Event.WORDS if session.machine.state is State.BARGED_IN else Event.STOP
        )
        if moved and uid:
            talk.cut = (uid, len(talk.history))
            self.sv.tell(session, Stop(utterance_id=uid, reason="barged_in"))
            self.sv.to_worker(session, Stop(utterance_id=uid, reason="barged_in"))

    def cancel_reply(self, session: Session) -> None:
        """The client stopped the bot: a reply still streaming is dropped too."""
        self._cancel(session.talk.reply_task)

    @staticmethod
    def _cancel(task: asyncio.Task[None] | None) -> None:
        """Cancel ``task`` unless it is done or is the one running (it returns by itself)."""
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()

    # ------------------------------------------------------------------ the bot's turn

    def _user_turn(self, session: Session) -> None:
        talk = session.talk
        text = " ".join(talk.pending_user)
        talk.pending_user.clear()
        thinking = session.machine.state is State.THINKING and talk.reply_task is not None
        if thinking or talk.merge_next:
            self._cancel(talk.reply_task)  # they said more: answer all of it
            talk.merge_next = False
            if talk.history and talk.history[-1].role == "user":
                text = f"{talk.history.pop().text} {text}"
        talk.turn_end_sample = talk.speech_end_sample
        text = text[:MAX_TURN_CHARS]
        talk.history.append(Turn("user", text))
        session.machine.fire(Event.USER_TURN)
        self.turns.inc()
        talk.reply_task = self.sv.spawn(self._reply(session, list(talk.history)))

    async def _reply(self, session: Session, history: list[Turn]) -> None:
        talk = session.talk
        name = talk.dialogue or self.default_dialogue
        reply: list[str] = []
        uid = ""
        try:
            dialogue = self._dialogue(name)
            cutter = SentenceBuffer()
            async for chunk in dialogue.reply(history):
                reply.append(chunk)
                for sentence in cutter.push(chunk):
                    uid = await self._say(session, uid, sentence)
            for sentence in cutter.flush():
                uid = await self._say(session, uid, sentence)
        except Exception as exc:  # the session must go on, whatever the adapter did
            code = exc.code if isinstance(exc, DialogueError | TextError) else "DIALOGUE_FAILED"
            self.dialogue_errors.labels(code).inc()
            self.sv.tell(session, Error(code=code, message=f"{exc}"[:1000] or type(exc).__name__))
            self.sv.log.warning(
                "dialogue failed", extra=kv(session=session.session_id, code=code, error=str(exc))
            )
        finally:
            if uid and uid == session.utterance_id:
                self.sv.tell(session, PlayoutText(utterance_id=uid, text="", final=True))
        text = "".join(reply).strip()
        if text:
            self.sv.tell(session, SessionEvent(kind="reply", fields={"text": text[:4000]}))
        if not uid and session.machine.state is State.THINKING:
            session.machine.fire(Event.NOTHING_TO_SAY)

    async def _say(self, session: Session, uid: str, sentence: str) -> str:
        """The first sentence starts the reply's utterance; later ones are appended to it."""
        talk = session.talk
        if uid:
            if uid == session.utterance_id:
                talk.speaking_text = f"{talk.speaking_text} {sentence}"
                self.sv.tell(session, PlayoutText(utterance_id=uid, text=f"{sentence} "))
            return uid
        waited = time.monotonic()
        # Not over the person: if they went on after a pause, their words will come as a
        # final that continues this turn (and cancels this reply, still THINKING). So wait
        # until what they are saying now has been transcribed, and again if they began while
        # the previous utterance (one they cut off, say) was still ending.
        patience = self.continuation_s * 5  # their final may never come: not for ever
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, waited + patience - time.monotonic())):
                    await talk.quiet.wait()
            while session.utterance_id or session.routing:  # an utterance still playing
                if time.monotonic() - waited > 60:
                    raise DialogueError("DIALOGUE_FAILED", "the previous utterance never ended")
                await asyncio.sleep(0.02)
            if talk.quiet.is_set() or time.monotonic() - waited >= patience:
                break
        assignment = await self.sv.route(session, session.voice)
        if assignment is None or session.session_id not in self.sv.sessions:
            raise DialogueError("NO_WORKER", "no TTS worker for the reply")
        uid = session.utterance_id = talk.reply_uid = os.urandom(6).hex()
        session.worker_id = assignment.worker_id
        talk.speaking_text = sentence
        session.machine.fire(Event.SPEAK)
        self.sv.tell(
            session,
            PlayoutSpeak(
                utterance_id=uid,
                text=f"{sentence} ",  # the space ends the sentence for the worker: speak it now
                worker_id=assignment.worker_id,
                voice=assignment.voice,
                final=False,
                answers_sample=talk.speech_end_sample,
            ),
        )
        return uid

    def _dialogue(self, name: str) -> Dialogue:
        if name not in self.dialogues:
            self.dialogues[name] = load_dialogue(name, self.dialogue_settings)
        return self.dialogues[name]

    # ------------------------------------------------------------------ playout

    def utterance_ended(self, session: Session, uid: str, heard: str, reason: str) -> None:
        """Remember what the person heard of it (history and echo)."""
        talk = session.talk
        if uid == talk.continuing:
            talk.bot_said.append((time.monotonic(), talk.speaking_text))
            talk.speaking_text, talk.continuing = "", ""
            return  # cut so the person could finish their turn: not part of the history
        talk.bot_said.append((time.monotonic(), talk.speaking_text))
        talk.speaking_text = ""
        if talk.barged:
            talk.barged = ""
            self._cancel(talk.barge_task)
        if heard or reason != "completed":
            turn = Turn("assistant", heard, interrupted=reason != "completed")
            cut_uid, at = talk.cut
            if uid == cut_uid and at < len(talk.history):
                if len(talk.history) == talk.history.maxlen:
                    talk.history.popleft()
                    at = max(0, at - 1)
                talk.history.insert(at, turn)
            else:
                talk.history.append(turn)
