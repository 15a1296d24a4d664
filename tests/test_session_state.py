"""The session state machine: every allowed move, refusals that never leave a session stuck."""

from __future__ import annotations

import pytest

from actors.supervisor.state import TRANSITIONS, Event, SessionMachine
from bus.schema.session import SessionState as State


def machine() -> tuple[SessionMachine, list[tuple[State, State, Event]]]:
    seen: list[tuple[State, State, Event]] = []
    m = SessionMachine("s1")
    m.listeners.append(lambda old, new, event: seen.append((old, new, event)))
    return m, seen


def test_a_spoken_turn_with_a_barge_in_and_a_false_interruption() -> None:
    m, seen = machine()
    for event in (
        Event.OPENED,
        Event.USER_TURN,
        Event.SPEAK,
        Event.SPEECH_START,
        Event.NO_WORDS,
        Event.SPEECH_START,
        Event.WORDS,
        Event.USER_TURN,
        Event.NOTHING_TO_SAY,
        Event.CLOSED,
    ):
        assert m.fire(event), event
    assert [new for _, new, _ in seen] == [
        State.LISTENING,
        State.THINKING,
        State.SPEAKING,
        State.BARGED_IN,
        State.SPEAKING,
        State.BARGED_IN,
        State.LISTENING,
        State.THINKING,
        State.LISTENING,
        State.ENDED,
    ]
    assert m.refused == 0


def test_text_only_utterances_pause_resume_stop() -> None:
    m, _ = machine()
    for event in (
        Event.OPENED,
        Event.SPEAK,
        Event.SPEAK,
        Event.PAUSE,
        Event.RESUME,
        Event.DONE,
        Event.SPEAK,
        Event.PAUSE,
        Event.STOP,
    ):
        assert m.fire(event), event
    assert m.state is State.LISTENING


@pytest.mark.parametrize(
    ("path", "refused_event"),
    [
        ((Event.OPENED,), Event.RESUME),
        ((Event.OPENED,), Event.WORDS),
        ((Event.OPENED, Event.SPEAK), Event.OPENED),
        ((Event.OPENED, Event.SPEAK, Event.PAUSE), Event.SPEECH_START),
        ((Event.OPENED, Event.CLOSED), Event.OPENED),
    ],
)
def test_impossible_events_are_refused_counted_and_change_nothing(
    path: tuple[Event, ...], refused_event: Event
) -> None:
    m, seen = machine()
    for event in path:
        assert m.fire(event)
    before, moves = m.state, len(seen)
    assert not m.fire(refused_event)
    assert (m.state, len(seen), m.refused) == (before, moves, 1)


def test_every_state_but_ended_can_close_and_none_is_a_dead_end() -> None:
    for state in State:
        if state is State.ENDED:
            continue
        assert TRANSITIONS[(state, Event.CLOSED)] is State.ENDED
        exits = {new for (old, _), new in TRANSITIONS.items() if old is state and new is not state}
        assert exits - {State.ENDED}, f"{state} can only end"
