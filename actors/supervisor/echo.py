"""Echo matching: is a transcript the bot's own voice, heard back through the person's
microphone? Letter trigrams, not words, because ASR splits and joins words it half-hears
("a like house" for "a lighthouse")."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence

_WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    """The words of ``text``, lower case, punctuation dropped."""
    return _WORD.findall(text.lower())


def _trigrams(text: str) -> set[str]:
    letters = "".join(words(text))
    return {letters[i : i + 3] for i in range(len(letters) - 2)}


def weighable(text: str) -> bool:
    """Whether ``text`` has a letter trigram for :func:`echo_share` to weigh ("A" has none)."""
    return bool(_trigrams(text))


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


class BotSaid:
    """The texts of the session's last few utterances and when each stopped playing."""

    def __init__(self, keep: int = 8) -> None:
        self._said: deque[tuple[float, str]] = deque(maxlen=keep)

    def ended(self, now: float, text: str) -> None:
        """An utterance holding ``text`` stopped playing at ``now`` (seconds)."""
        self._said.append((now, text))

    def within(self, now: float, tail_s: float) -> list[str]:
        """The texts that stopped playing less than ``tail_s`` seconds before ``now``."""
        return [text for ended, text in self._said if now - ended < tail_s]
