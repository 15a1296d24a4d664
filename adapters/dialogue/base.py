"""The dialogue adapter interface."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

MAX_REPLY_CHARS = 4000
"""A reply is cut here (it is spoken, and a runaway model must not speak forever)."""


@dataclass(frozen=True, slots=True)
class Turn:
    """One turn of the conversation as the person experienced it."""

    role: str
    """``user`` or ``assistant``."""
    text: str
    """For the assistant: what was played to the person, not what was generated."""
    interrupted: bool = False
    """The person cut the assistant off after ``text``."""


class DialogueError(Exception):
    """The adapter could not answer; ``code`` goes to the client in an ``error`` message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Dialogue(Protocol):
    """Answers a conversation."""

    name: str

    def reply(self, history: Sequence[Turn]) -> AsyncIterator[str]:
        """Stream the reply to ``history`` (whose last turn is the person's) as text chunks.
        Raises :class:`DialogueError` on failure, possibly after some chunks."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
