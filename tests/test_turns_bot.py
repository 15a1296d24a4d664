"""The bot's side of one session's turn-taking, on the pure core: replies streamed as one
utterance, texts queued in order, the client's controls, deadlines and session expiry, refused
events. The person's side is tests/test_turns.py."""

from __future__ import annotations

from actors.supervisor.commands import (
    CancelReply,
    CloseSession,
    Count,
    Metric,
    ReplyDone,
    ReplyFailed,
    ReplySentence,
    StartReply,
)
from actors.supervisor.history import MAX_HISTORY, MAX_TURN_CHARS
from actors.supervisor.playlist import MAX_QUEUED_UTTERANCES
from adapters.dialogue import Turn
from bus.schema.control import Pause, Resume, Stop
from bus.schema.session import (
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
from tests.turnkit import (
    STORY,
    Core,
    Wait,
    barged,
    ended,
    final,
    partial,
    replying,
    run_test,
    speech,
    state,
    told,
)

S = SessionState


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
