"""The person's side of one session's turn-taking, on the pure core (actors/supervisor/turns.py):
barge-in, continuation, waiting for quiet, echo, and the history of what was heard. One test
per rule of the module's docstring; the bot's side is tests/test_turns_bot.py."""

from __future__ import annotations

import pytest

from actors.supervisor.commands import (
    CancelReply,
    Count,
    Metric,
    ReplyDone,
    ReplySentence,
    StartReply,
)
from adapters.dialogue import Turn
from bus.schema.asr import Transcript
from bus.schema.control import BargeInOutcome, Pause, Stop
from bus.schema.session import (
    PlayoutSpeak,
    SessionOpened,
    SessionReply,
    SessionState,
    StateChanged,
)
from bus.schema.tts import EndReason
from bus.schema.vad import SpeechEnd
from tests.turnkit import (
    SECOND,
    STORY,
    Core,
    Wait,
    barged,
    ended,
    final,
    held,
    outcome,
    partial,
    replying,
    run_test,
    speech,
    state,
)

S = SessionState


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


def test_words_that_come_before_the_hold_decide_it_when_it_arrives() -> None:
    """VAD's speech_start and ASR's partial travel the event bus, the gateway's hold comes
    straight: a partial with words may arrive first, and still gives the person the turn."""
    core = replying()
    run_test(core, [*speech(5), partial("what time", 5)], never=[BargeInOutcome, Stop])
    run_test(core, [held("u1")], expect=[state(S.BARGED_IN), outcome("u1", True)])
    assert core.state is S.LISTENING


def test_a_partial_of_earlier_speech_does_not_decide_a_later_hold() -> None:
    core = replying()
    run_test(core, [*speech(5), partial("what time", 5), *speech(8)])
    run_test(core, [held("u1")], expect=[state(S.BARGED_IN)], never=[BargeInOutcome])


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


def test_a_partial_too_short_to_weigh_waits_and_echo_after_it_is_no_words() -> None:
    """Whisper's first partial of the bot's echo may be one letter ("A"): no trigram to match
    against the bot's words, so it waits for the next transcript like one in doubt."""
    core = barged()
    run_test(core, [partial("A", 5)], never=[BargeInOutcome])
    assert core.state is S.BARGED_IN
    run_test(core, [final("the lighthouse keeper", 5)], expect=[outcome("u1", False)])


def test_a_short_final_with_words_over_a_held_reply_still_takes_the_turn() -> None:
    core = barged()
    run_test(core, [final("No", 5)], expect=[outcome("u1", True)])


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


def test_a_reply_waits_for_a_person_who_went_on_while_the_cut_utterance_was_ending() -> None:
    """Their words cut the story; they speak again before its end comes back from the gateway:
    the reply to the words waits for the rest."""
    core = barged()
    run_test(core, [SpeechEnd(stream_sample=6 * SECOND), final("wait", 5)], expect=[StartReply])
    run_test(core, [*speech(6.3), ReplySentence(2, "Sure."), ReplyDone(2, "Sure.")])
    run_test(core, [ended("u1", reason=EndReason.BARGED_IN)], never=[PlayoutSpeak])
    run_test(core, [final("", 6.3)], expect=[PlayoutSpeak])


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
