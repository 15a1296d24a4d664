"""A session's state machine, on its own: which turn the conversation is in.

The turn-taking core (:mod:`actors.supervisor.turns`) feeds it events and reports every
transition; this module decides only what may follow what. An event that makes no sense in the
current state (a RESUME while listening) changes nothing: it is counted and logged, and the
session is never left stuck.

    IDLE --opened--> LISTENING --user_turn--> THINKING --speak--> SPEAKING --done--> LISTENING
    SPEAKING --pause--> PAUSED --resume--> SPEAKING
    SPEAKING / PAUSED / BARGED_IN / THINKING --stop--> LISTENING
    SPEAKING --speech_start--> BARGED_IN --words--> LISTENING   (the bot's utterance is dropped)
                                         --no_words--> SPEAKING (a cough: playout resumes)
    any --closed--> ENDED
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from bus.logs import kv
from bus.schema.session import SessionState

log = logging.getLogger("duplex.session")


class Event(enum.StrEnum):
    """What happened."""

    OPENED = "opened"
    USER_TURN = "user_turn"
    """The person finished a turn with words (a final transcript)."""
    SPEAK = "speak"
    """An utterance starts playing."""
    NOTHING_TO_SAY = "nothing_to_say"
    """The dialogue produced no reply (empty, error or timeout)."""
    DONE = "done"
    """The playing utterance ended (completed, or failed) and nothing else is queued."""
    PAUSE = "pause"
    RESUME = "resume"
    STOP = "stop"
    """The bot was cut: the client's stop, or the person's words without a barge-in hold."""
    SPEECH_START = "speech_start"
    """The person started speaking over the bot (the gateway held its playout)."""
    WORDS = "words"
    """That speech held words: the turn goes to the person."""
    NO_WORDS = "no_words"
    """That speech held no words within the window: a false interruption."""
    CLOSED = "closed"


S, E = SessionState, Event
TRANSITIONS: dict[tuple[SessionState, Event], SessionState] = {
    (S.IDLE, E.OPENED): S.LISTENING,
    (S.LISTENING, E.USER_TURN): S.THINKING,
    (S.LISTENING, E.SPEAK): S.SPEAKING,
    (S.THINKING, E.SPEAK): S.SPEAKING,
    (S.THINKING, E.NOTHING_TO_SAY): S.LISTENING,
    (S.THINKING, E.USER_TURN): S.THINKING,
    (S.THINKING, E.STOP): S.LISTENING,
    (S.SPEAKING, E.SPEAK): S.SPEAKING,
    (S.SPEAKING, E.DONE): S.LISTENING,
    (S.SPEAKING, E.PAUSE): S.PAUSED,
    (S.SPEAKING, E.STOP): S.LISTENING,
    (S.SPEAKING, E.SPEECH_START): S.BARGED_IN,
    (S.PAUSED, E.RESUME): S.SPEAKING,
    (S.PAUSED, E.STOP): S.LISTENING,
    (S.PAUSED, E.DONE): S.LISTENING,
    (S.BARGED_IN, E.WORDS): S.LISTENING,
    (S.BARGED_IN, E.NO_WORDS): S.SPEAKING,
    (S.BARGED_IN, E.STOP): S.LISTENING,
    (S.BARGED_IN, E.DONE): S.LISTENING,
    **{(state, E.CLOSED): S.ENDED for state in SessionState if state is not S.ENDED},
}
"""Every allowed move; anything else is refused."""

Listener = Callable[[SessionState, SessionState, Event], None]


@dataclass(slots=True)
class SessionMachine:
    """One session's state; :meth:`fire` moves it or refuses."""

    session: str
    state: SessionState = SessionState.IDLE
    refused: int = 0
    """Events refused so far (also logged)."""
    listeners: list[Listener] = field(default_factory=list)
    on_refused: Callable[[], None] | None = None
    """Called for every refused event (the turn core counts them)."""

    def fire(self, event: Event) -> bool:
        """Apply ``event``; False (state unchanged) when it makes no sense now."""
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            self.refused += 1
            if self.on_refused is not None:
                self.on_refused()
            log.warning(
                "impossible transition refused",
                extra=kv(session=self.session, state=self.state.value, event=event.value),
            )
            return False
        old, self.state = self.state, new
        for listener in self.listeners:
            listener(old, new, event)
        return True
