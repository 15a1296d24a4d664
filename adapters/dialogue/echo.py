"""The ``echo`` dialogue: answers with what it heard (the default; no model, no network)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from adapters.dialogue.base import MAX_REPLY_CHARS, Turn


class EchoDialogue:
    """Says the person's last turn back to them."""

    name = "echo"

    async def reply(self, history: Sequence[Turn]) -> AsyncIterator[str]:
        for turn in reversed(history):
            if turn.role == "user":
                yield turn.text[:MAX_REPLY_CHARS]
                return

    async def close(self) -> None:
        return None
