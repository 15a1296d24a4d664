"""Every turn-taking rule of one session, on the pure core (actors/supervisor/turns.py): events
in, commands out, a clock the test moves. One test per rule of the module's docstring."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

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
from actors.supervisor.history import MAX_HISTORY, MAX_TURN_CHARS
from actors.supervisor.playlist import MAX_QUEUED_UTTERANCES
from actors.supervisor.settings import SupervisorSettings
from actors.supervisor.turns import TurnTaking
from adapters.dialogue import Turn
from bus.schema.asr import Transcript
from bus.schema.control import BargeInOutcome, Pause, Resume, Stop
from bus.schema.session import (
    PlayoutEvent,
    PlayoutEventKind,
    PlayoutSpeak,
    PlayoutText,
    SessionClosed,
    SessionConfig,
    SessionOpened,
    SessionReply,
    SessionState,
    SessionText,
    StateChanged,
)
from bus.schema.system import Error
from bus.schema.tts import EndReason
from bus.schema.vad import SpeechEnd, SpeechStart

S = SessionState
SECOND = 16_000
"""Stream samples in a second."""
STORY = "The lighthouse keeper counted the waves."

# ------------------------------------------------------------------ the harness


@dataclass(frozen=True)
class Wait:
    """Move the test's clock on by ``seconds``, then tick the core."""

    seconds: float


class Core:
    """One session's core, its clock at 0 and utterance ids ``u1``, ``u2``... in order."""

    def __init__(self, **settings: Any) -> None:
        ids = (f"u{n}" for n in itertools.count(1))
        self.now = 0.0
        self.turns = TurnTaking("s1", SupervisorSettings(**settings), self.now, lambda: next(ids))

    @property
    def state(self) -> SessionState:
        return self.turns.state

    def run(self, steps: Sequence[TurnEvent | Wait]) -> list[Command]:
        out: list[Command] = []
        for step in steps:
            if isinstance(step, Wait):
                self.now += step.seconds
                out += self.turns.tick(self.now)
            else:
                out += self.turns.handle(step, self.now)
        return out


def _matches(command: Command, want: object) -> bool:
    """``want`` is a command, a message told to the gateway, or a type of either."""
    told = command.message if isinstance(command, Tell) else None
    if isinstance(want, type):
        return isinstance(command, want) or isinstance(told, want)
    return command == want or told == want


def run_test(
    core: Core,
    send: Sequence[TurnEvent | Wait],
    expect: Sequence[object] = (),
    never: Sequence[object] = (),
) -> list[Command]:
    """Send ``send``; the commands out hold ``expect`` in that order (others may come
    between) and nothing that matches ``never``."""
    out = core.run(send)
    rest = iter(out)
    for want in expect:
        assert any(_matches(c, want) for c in rest), f"no {want!r} (in order) in {out!r}"
    for unwanted in never:
        assert not [c for c in out if _matches(c, unwanted)], f"{unwanted!r} in {out!r}"
    return out


def told(out: Sequence[Command], kind: type) -> list[object]:
    return [c.message for c in out if isinstance(c, Tell) and isinstance(c.message, kind)]


# ------------------------------------------------------------------ events


def speech(start_s: float, end_s: float | None = None) -> list[TurnEvent]:
    """The person speaks from ``start_s`` (to ``end_s``), in stream seconds."""
    start = round(start_s * SECOND)
    events: list[TurnEvent] = [SpeechStart(stream_sample=start, preroll_sample=start - 4800)]
    if end_s is not None:
        events.append(SpeechEnd(stream_sample=round(end_s * SECOND)))
    return events


def final(text: str, start_s: float) -> Transcript:
    return Transcript(text=text, final=True, start_sample=round(start_s * SECOND) - 4800)


def partial(text: str, start_s: float) -> Transcript:
    return Transcript(text=text, final=False, start_sample=round(start_s * SECOND) - 4800)


def held(uid: str) -> PlayoutEvent:
    return PlayoutEvent(utterance_id=uid, event=PlayoutEventKind.HELD)


def started(uid: str) -> PlayoutEvent:
    return PlayoutEvent(utterance_id=uid, event=PlayoutEventKind.STARTED)


def ended(uid: str, heard: str = "", reason: EndReason = EndReason.COMPLETED) -> PlayoutEvent:
    return PlayoutEvent(utterance_id=uid, event=PlayoutEventKind.ENDED, reason=reason, heard=heard)


def outcome(uid: str, words: bool) -> BargeInOutcome:
    return BargeInOutcome(utterance_id=uid, words=words)


def state(s: SessionState) -> StateChanged:
    return StateChanged(state=s)


def replying(**settings: Any) -> Core:
    """A core whose reply ``u1`` (:data:`STORY`) plays: the person asked from 1 s to 2 s."""
    core = Core(**settings)
    run_test(
        core,
        [
            SessionOpened(gateway="gw"),
            *speech(1, 2),
            final("tell me a story", 1),
            ReplySentence(1, STORY),
            started("u1"),
        ],
        expect=[
            state(S.THINKING),
            StartReply(1, "", (Turn("user", "tell me a story"),)),
            state(S.SPEAKING),
            PlayoutSpeak(utterance_id="u1", text=f"{STORY} ", final=False, answers_sample=32000),
        ],
    )
    return core


def barged(**settings: Any) -> Core:
    """:func:`replying`, then the person speaks over it 3 s after their turn (no
    continuation) and the gateway holds it."""
    core = replying(**settings)
    run_test(core, [*speech(5), held("u1")], expect=[state(S.BARGED_IN), Count(Metric.BARGE_IN)])
    return core


# ------------------------------------------------------------------ barge-in


@pytest.mark.parametrize("first", [partial("wait", 5), final("wait", 5)], ids=["partial", "final"])
def test_words_over_a_held_reply_give_the_person_the_turn(first: Transcript) -> None:
    core = barged()
    out = run_test(
        core,
        [first],
        expect=[CancelReply(1), state(S.LISTENING), outcome("u1", True)],
        never=[Stop],
    )
    if not first.final:
        out = run_test(core, [final("wait", 5)])
    (start,) = [c for c in out if isinstance(c, StartReply)]
    assert start.history == (Turn("user", "tell me a story"), Turn("user", "wait"))
    assert core.state is S.THINKING


def test_no_words_over_a_held_reply_resume_it_as_a_false_interruption() -> None:
    core = barged()
    run_test(
        core,
        [final("", 5)],
        expect=[outcome("u1", False), state(S.SPEAKING), Count(Metric.FALSE_INTERRUPTION)],
        never=[StartReply],
    )


def test_a_held_reply_resumes_when_the_barge_window_runs_out() -> None:
    core = barged(barge_window_ms=1000)
    run_test(core, [Wait(0.75)], never=[BargeInOutcome])
    assert core.turns.next_tick == 1.0
    run_test(core, [Wait(0.25)], expect=[outcome("u1", False), Count(Metric.FALSE_INTERRUPTION)])
    assert core.state is S.SPEAKING


def test_the_bots_own_echo_over_a_held_reply_is_no_words() -> None:
    core = barged()
    run_test(
        core,
        [final("the lighthouse keeper counted", 5)],
        expect=[Count(Metric.ECHO_IGNORED), outcome("u1", False), state(S.SPEAKING)],
        never=[StartReply],
    )


def test_a_partial_in_doubt_waits_and_words_after_it_take_the_turn() -> None:
    core = barged()
    run_test(core, [partial("a like house", 5)], never=[BargeInOutcome])
    assert core.state is S.BARGED_IN
    run_test(core, [partial("a like house with ships", 5)], expect=[outcome("u1", True)])


def test_a_partial_in_doubt_then_echo_is_no_words() -> None:
    core = barged()
    run_test(core, [partial("a like house", 5)], never=[BargeInOutcome])
    run_test(core, [final("the lighthouse keeper", 5)], expect=[outcome("u1", False)])


def test_a_partial_in_doubt_gets_the_barge_window_once_more() -> None:
    core = barged(barge_window_ms=1000)
    run_test(core, [partial("a like house", 5), Wait(1.0), Wait(0.75)], never=[BargeInOutcome])
    run_test(core, [Wait(0.25)], expect=[outcome("u1", False)])


def test_a_hold_of_another_utterance_or_out_of_speaking_is_answered_at_once() -> None:
    core = replying()
    run_test(core, [held("u0")], expect=[outcome("u0", False)], never=[StateChanged])
    run_test(core, [Pause(), held("u1")], expect=[state(S.PAUSED), outcome("u1", False)])
    assert core.state is S.PAUSED


def test_words_of_speech_begun_before_the_bot_spoke_stop_it() -> None:
    core = replying()
    run_test(
        core,
        [final("and make it short", 1.5)],  # no hold: VAD's speech_start came before u1
        expect=[
            state(S.LISTENING),
            Stop(utterance_id="u1", reason=EndReason.BARGED_IN),
            state(S.THINKING),
            StartReply,
        ],
        never=[BargeInOutcome],
    )


# ------------------------------------------------------------------ the person's turn


def test_speech_soon_after_a_turn_continues_it_and_the_cut_reply_is_left_out() -> None:
    core = replying(continuation_ms=2000)
    out = run_test(
        core,
        [
            *speech(3.5),
            held("u1"),
            partial("about", 3.5),
            ended("u1", "The light", EndReason.BARGED_IN),
        ],
        expect=[outcome("u1", True)],
    )
    out = run_test(core, [final("about the sea", 3.5)], expect=[StartReply])
    (start,) = [c for c in out if isinstance(c, StartReply)]
    assert start.history == (Turn("user", "tell me a story about the sea"),)


def test_speech_later_than_continuation_is_a_turn_of_its_own() -> None:
    core = barged(continuation_ms=2000)  # the person went on 3 s after their turn
    run_test(core, [partial("stop", 5), ended("u1", "The light", EndReason.BARGED_IN)])
    out = run_test(core, [final("stop", 5)])
    (start,) = [c for c in out if isinstance(c, StartReply)]
    assert start.history == (
        Turn("user", "tell me a story"),
        Turn("assistant", "The light", interrupted=True),
        Turn("user", "stop"),
    )


def test_a_reply_never_starts_while_the_person_speaks_again() -> None:
    core = Core()
    run_test(core, [SessionOpened(gateway="gw"), *speech(1, 2), final("tell me", 1), *speech(2.5)])
    run_test(core, [ReplySentence(1, "Sure."), ReplyDone(1, "Sure.")], never=[PlayoutSpeak])
    run_test(
        core,
        [final("", 2.5)],
        expect=[PlayoutSpeak(utterance_id="u1", text="Sure. ", final=False, answers_sample=32000)],
    )


def test_the_persons_next_words_drop_the_reply_in_the_making_and_join_the_turn() -> None:
    core = Core()
    run_test(
        core, [SessionOpened(gateway="gw"), *speech(1, 2), final("tell me", 1), *speech(2.5, 3)]
    )
    run_test(core, [ReplySentence(1, "Sure.")], never=[PlayoutSpeak])
    out = run_test(
        core, [final("a story", 2.5)], expect=[CancelReply(1), StartReply], never=[PlayoutSpeak]
    )
    assert [c.history for c in out if isinstance(c, StartReply)] == [
        (Turn("user", "tell me a story"),)
    ]
    run_test(
        core, [ReplySentence(1, "Sure."), ReplyDone(1, "Sure.")], never=[PlayoutSpeak, SessionReply]
    )


def test_a_reply_waiting_for_the_persons_final_runs_out_of_patience() -> None:
    core = Core(continuation_ms=1000)  # patience: 5 s
    run_test(core, [SessionOpened(gateway="gw"), *speech(1, 2), final("tell me", 1), *speech(2.5)])
    run_test(core, [ReplySentence(1, "Sure."), Wait(4.75)], never=[PlayoutSpeak])
    run_test(core, [Wait(0.25)], expect=[state(S.SPEAKING), PlayoutSpeak])


def test_a_final_of_earlier_speech_does_not_end_the_wait() -> None:
    core = Core()
    run_test(core, [SessionOpened(gateway="gw"), *speech(1, 2), final("tell me", 1), *speech(2.5)])
    run_test(core, [ReplySentence(1, "Sure."), final("", 1)], never=[PlayoutSpeak])


def test_echo_shortly_after_the_bot_spoke_is_not_a_turn() -> None:
    core = replying(echo_tail_ms=1500)
    run_test(core, [ReplyDone(1, STORY), ended("u1", STORY)], expect=[state(S.LISTENING)])
    echo = "the lighthouse keeper counted"
    run_test(
        core, [Wait(1.25), final(echo, 4)], expect=[Count(Metric.ECHO_IGNORED)], never=[StartReply]
    )
    run_test(
        core, [Wait(0.5), final(echo, 6)], expect=[StartReply], never=[Count(Metric.ECHO_IGNORED)]
    )


# ------------------------------------------------------------------ the bot's turn


def test_a_reply_streams_as_one_utterance_closed_by_an_empty_final_text() -> None:
    core = replying()
    run_test(
        core,
        [ReplySentence(1, "He was old."), ReplyDone(1, f"{STORY} He was old.")],
        expect=[
            PlayoutText(utterance_id="u1", text="He was old. "),
            PlayoutText(utterance_id="u1", text="", final=True),
            SessionReply(text=f"{STORY} He was old."),
        ],
    )
    run_test(core, [ended("u1", STORY)], expect=[state(S.LISTENING)])


def test_a_failed_dialogue_tells_the_client_and_listens_again() -> None:
    core = Core()
    run_test(core, [SessionOpened(gateway="gw"), *speech(1, 2), final("tell me", 1)])
    run_test(
        core,
        [ReplyFailed(1, "DIALOGUE_TIMEOUT", "no first token")],
        expect=[
            Error(code="DIALOGUE_TIMEOUT", message="no first token"),
            Count(Metric.DIALOGUE_ERROR, "DIALOGUE_TIMEOUT"),
            state(S.LISTENING),
        ],
        never=[PlayoutSpeak],
    )


def test_history_holds_what_was_heard_the_cut_part_before_the_turn_that_cut_it() -> None:
    core = barged()
    cut = [partial("wait", 5), SpeechEnd(stream_sample=6 * SECOND), final("wait, what waves", 5)]
    run_test(core, cut, expect=[outcome("u1", True), StartReply])
    run_test(core, [ReplySentence(2, "Big ones."), ReplyDone(2, "Big ones.")], never=[PlayoutSpeak])
    run_test(
        core,
        [ended("u1", "The lighthouse keeper", EndReason.BARGED_IN)],  # after the cutting turn
        expect=[
            PlayoutSpeak(utterance_id="u2", text="Big ones. ", final=False, answers_sample=96000)
        ],
    )
    out = run_test(core, [ended("u2", "Big ones."), *speech(9, 10), final("ok", 9)])
    (start,) = [c for c in out if isinstance(c, StartReply)]
    assert start.history == (
        Turn("user", "tell me a story"),
        Turn("assistant", "The lighthouse keeper", interrupted=True),
        Turn("user", "wait, what waves"),
        Turn("assistant", "Big ones."),
        Turn("user", "ok"),
    )


def test_texts_play_one_after_another_in_order() -> None:
    core = Core()
    out = run_test(
        core,
        [
            SessionOpened(gateway="gw"),
            SessionConfig(voice="joe"),
            SessionText(text="one"),
            SessionText(text="two", voice="amy"),
        ],
    )
    assert told(out, PlayoutSpeak) == [PlayoutSpeak(utterance_id="u1", text="one", voice="joe")]
    run_test(
        core,
        [ended("u1", "one")],
        expect=[PlayoutSpeak(utterance_id="u2", text="two", voice="amy")],
        never=[state(S.LISTENING)],
    )
    run_test(core, [ended("u2", "two")], expect=[state(S.LISTENING)], never=[PlayoutSpeak])


def test_a_reply_waits_for_the_utterance_playing_and_the_texts_queued_before_it() -> None:
    core = Core()
    run_test(core, [SessionOpened(gateway="gw"), *speech(1, 2), final("tell me", 1)])
    run_test(core, [SessionText(text="one"), SessionText(text="two")], expect=[state(S.SPEAKING)])
    run_test(core, [ReplySentence(1, "Sure."), ReplyDone(1, "Sure."), ended("u1", "one")])
    out = run_test(
        core,
        [ended("u2", "two")],
        expect=[PlayoutSpeak(utterance_id="u3", text="Sure. ", final=False, answers_sample=32000)],
    )
    assert told(out, PlayoutText) == [PlayoutText(utterance_id="u3", text="", final=True)]


def test_a_reply_stuck_behind_an_utterance_that_never_ends_gives_up() -> None:
    core = Core()
    run_test(core, [SessionOpened(gateway="gw"), *speech(1, 2), final("tell me", 1)])
    run_test(core, [SessionText(text="one"), ReplySentence(1, "Sure."), Wait(59.75)], never=[Error])
    run_test(
        core,
        [Wait(0.25)],
        expect=[
            CancelReply(1),
            Error(code="DIALOGUE_FAILED", message="the previous utterance never ended"),
        ],
    )
    run_test(core, [ended("u1", "one")], expect=[state(S.LISTENING)], never=[PlayoutSpeak])


def test_each_tick_moves_the_next_one_on() -> None:
    """The actor sleeps until ``next_tick``: a deadline that a tick did not move would spin it."""
    core = barged(barge_window_ms=1000, continuation_ms=1000, max_duration_s=100)
    run_test(core, [partial("a like house", 5)])  # in doubt: the window once more
    before_tick = {  # no words; a turn; the person speaks again as its reply comes
        2.0: [
            final("", 5),
            ended("u1", "The"),
            *speech(6, 7),
            final("go", 6),
            *speech(8),
            ReplySentence(2, "On."),
        ],
    }
    due = []
    while core.state is not S.ENDED:
        core.now = core.turns.next_tick
        due.append(core.now)
        core.run([*before_tick.get(core.now, []), Wait(0)])
    assert due == [1.0, 2.0, 7.0, 100.0]  # window, window again, patience, maximum duration


def test_texts_beyond_the_queue_limit_are_refused() -> None:
    core = Core()
    texts = [SessionText(text=f"text {n}") for n in range(MAX_QUEUED_UTTERANCES + 1)]
    run_test(core, [SessionOpened(gateway="gw"), *texts], never=[Error])  # one plays
    run_test(
        core,
        [SessionText(text="one too many")],
        expect=[
            Error(code="RATE_LIMITED", message=f"{MAX_QUEUED_UTTERANCES} texts already queued")
        ],
    )


def test_a_client_stop_drops_the_queue_and_the_reply_in_the_making() -> None:
    core = Core()
    run_test(core, [SessionOpened(gateway="gw"), SessionText(text="one"), SessionText(text="two")])
    run_test(core, [Stop()], expect=[state(S.LISTENING)], never=[Stop])  # never echoed back
    run_test(core, [ended("u1", "o", EndReason.STOPPED)], never=[PlayoutSpeak, StateChanged])
    heard = (Turn("assistant", "o", interrupted=True), Turn("user", "tell me"))
    run_test(core, [*speech(1, 2), final("tell me", 1)], expect=[StartReply(1, "", heard)])
    run_test(core, [Stop()], expect=[CancelReply(1), state(S.LISTENING)], never=[Stop])
    assert core.run([ReplySentence(1, "Sure."), ReplyDone(1, "Sure.")]) == []


def test_client_pause_and_resume_only_move_the_state() -> None:
    core = replying()
    run_test(core, [Pause()], expect=[state(S.PAUSED)], never=[Pause])
    run_test(core, [Resume()], expect=[state(S.SPEAKING)], never=[Resume])


def test_a_session_with_no_sign_of_the_person_ends_but_not_while_the_bot_speaks() -> None:
    core = Core(idle_timeout_s=10)
    playing = [SessionOpened(gateway="gw"), SessionText(text="one"), Wait(20)]
    run_test(core, playing, never=[CloseSession])
    run_test(core, [ended("u1", "one"), Wait(9.75)], never=[CloseSession])
    run_test(core, [Wait(0.25)], expect=[state(S.ENDED), CloseSession("idle_timeout")])
    assert core.run([SessionText(text="late"), Wait(100)]) == []


def test_no_session_outlives_the_maximum_duration() -> None:
    core = Core(idle_timeout_s=10, max_duration_s=30)
    run_test(core, [SessionOpened(gateway="gw")])
    run_test(core, [Wait(5), SessionConfig()] * 5, never=[CloseSession])  # never idle
    run_test(core, [Wait(5)], expect=[CloseSession("max_duration")])


def test_a_session_closed_by_the_gateway_ends_without_telling_it_to_close() -> None:
    core = Core()
    run_test(core, [SessionOpened(gateway="gw"), *speech(1, 2), final("hi", 1)])
    run_test(
        core,
        [SessionClosed(reason="client_closed")],
        expect=[CancelReply(1), state(S.ENDED)],
        never=[CloseSession],
    )


def test_events_that_make_no_sense_now_are_refused_and_counted() -> None:
    core = Core()
    run_test(core, [SessionOpened(gateway="gw")])
    run_test(core, [Resume()], expect=[Count(Metric.REFUSED_TRANSITION)], never=[StateChanged])
    assert core.state is S.LISTENING


def test_the_history_and_a_turn_are_bounded() -> None:
    core = Core()
    run_test(core, [SessionOpened(gateway="gw")])
    for n in range(MAX_HISTORY):
        run_test(
            core,
            [*speech(10 * n + 1, 10 * n + 2), final(f"turn {n}", 10 * n + 1), ReplyDone(n + 1, "")],
        )
    out = run_test(core, [*speech(1000, 1001), final("x" * (MAX_TURN_CHARS + 10), 1000)])
    (start,) = [c for c in out if isinstance(c, StartReply)]
    assert len(start.history) == MAX_HISTORY
    assert start.history[0] == Turn("user", "turn 1")
    assert start.history[-1] == Turn("user", "x" * MAX_TURN_CHARS)
