"""The turn core's test harness (pipecat's ``run_test`` style): send events, expect commands,
move a clock by hand. Utterance ids are ``u1``, ``u2``... in the order they are made."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from actors.supervisor.commands import (
    Command,
    Count,
    Metric,
    ReplySentence,
    StartReply,
    Tell,
    TurnEvent,
)
from actors.supervisor.settings import SupervisorSettings
from actors.supervisor.turns import TurnTaking
from adapters.dialogue import Turn
from bus.schema.asr import Transcript
from bus.schema.control import BargeInOutcome
from bus.schema.session import (
    PlayoutEvent,
    PlayoutEventKind,
    PlayoutSpeak,
    SessionOpened,
    SessionState,
    StateChanged,
)
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
