"""A session's history as the dialogue adapter sees it: what the person said, and what they
actually heard of the bot (not what was generated)."""

from __future__ import annotations

from collections import deque

from adapters.dialogue import Turn
from bus.schema.tts import EndReason

MAX_HISTORY = 40
"""Turns kept per session (oldest dropped)."""
MAX_TURN_CHARS = 4000
"""A person's turn is cut here (turns that continue each other are joined)."""


class History:
    """The last :data:`MAX_HISTORY` turns."""

    def __init__(self, keep: int = MAX_HISTORY) -> None:
        self._turns: deque[Turn] = deque(maxlen=keep)
        self._cut: tuple[str, int] = ("", 0)
        """The utterance the person cut off, and where its heard part belongs."""

    def said(self, text: str, *, continues: bool = False) -> None:
        """The person's turn; ``continues``: it goes on from their last one (joined)."""
        if continues and self._turns and self._turns[-1].role == "user":
            text = f"{self._turns.pop().text} {text}"
        self._turns.append(Turn("user", text[:MAX_TURN_CHARS]))

    def cut(self, utterance_id: str) -> None:
        """The person cut ``utterance_id`` off: what they heard of it goes before the turn
        they are taking, even when its end is reported after that turn was taken."""
        self._cut = (utterance_id, len(self._turns))

    def heard(self, utterance_id: str, text: str, reason: EndReason) -> None:
        """``utterance_id`` ended: the person heard ``text`` of it."""
        if not text and reason is EndReason.COMPLETED:
            return
        turn = Turn("assistant", text, interrupted=reason is not EndReason.COMPLETED)
        cut, at = self._cut
        if utterance_id != cut or at >= len(self._turns):
            self._turns.append(turn)
            return
        if len(self._turns) == self._turns.maxlen:
            self._turns.popleft()
            at = max(0, at - 1)
        self._turns.insert(at, turn)

    def turns(self) -> tuple[Turn, ...]:
        """Oldest first."""
        return tuple(self._turns)
